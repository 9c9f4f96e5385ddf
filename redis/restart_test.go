package redis

import "testing"

func TestRestartedServer(t *testing.T) {
	a1 := map[string]string{"a:1": "r1"}
	for _, tc := range []struct {
		name      string
		prev, now map[string]string
		cluster   bool
		want      bool
	}{
		{"first look", nil, a1, false, false},
		{"same", a1, a1, false, false},
		{"restarted in place", a1, map[string]string{"a:1": "r2"}, false, true},
		{"failover to a new master", a1, map[string]string{"b:1": "r2"}, false, true},
		{"same server, new address", a1, map[string]string{"b:1": "r1"}, false, false},
		{"cluster node restarted", map[string]string{"a:1": "r1", "b:1": "r2"}, map[string]string{"a:1": "r1", "b:1": "r3"}, true, true},
		{"cluster node joined", map[string]string{"a:1": "r1"}, map[string]string{"a:1": "r1", "b:1": "r3"}, true, false},
	} {
		if got := restartedServer(tc.prev, tc.now, tc.cluster); got != tc.want {
			t.Errorf("%s: restartedServer = %v, want %v", tc.name, got, tc.want)
		}
	}
}
