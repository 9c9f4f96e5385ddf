package redis

import (
	"testing"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
	"github.com/sessionbridge/sessionbridge/storetest"
)

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) (sessionbridge.Store, sessionbridge.Bus) {
		b := newBackend(t, srv)
		return b.Store(), b.Bus()
	})
}

func TestConformanceWithoutClientCache(t *testing.T) {
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) (sessionbridge.Store, sessionbridge.Bus) {
		b := newBackend(t, srv, func(o *Options) { o.DisableClientCache = true })
		return b.Store(), b.Bus()
	})
}
