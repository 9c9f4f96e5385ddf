package httpapi

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/usage"
)

// Usage routes (docs/usage.md): the buckets of one key or user, the top
// subjects by a metric, and the live connections of a key.

// Defaults of the usage queries.
const (
	// DefaultTopLimit is how many subjects GET /api/v1/usage/top returns
	// without ?limit.
	DefaultTopLimit = 10
	// DefaultTopWindow is the window of GET /api/v1/usage/top without
	// ?window.
	DefaultTopWindow = time.Hour
)

// defaultSpan is how far back a usage query without ?from reaches, by step:
// the last hour by minute, the last day by hour, the last 30 days by day.
func defaultSpan(step usage.Step) time.Duration {
	switch step {
	case usage.Hour:
		return 24 * time.Hour
	case usage.Day:
		return 30 * 24 * time.Hour
	}
	return time.Hour
}

// usagePoint is one bucket of a usage answer.
type usagePoint struct {
	Start  time.Time        `json:"start"`
	Counts map[string]int64 `json:"counts"`
}

// usageView is the answer of the usage routes.
type usageView struct {
	Kind string    `json:"kind"`
	ID   string    `json:"id"`
	Step string    `json:"step"`
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Totals sums every metric over the points; peak_connections is the
	// highest peak of any point.
	Totals map[string]int64 `json:"totals"`
	Points []usagePoint     `json:"points"`
	// LiveConnections is the number of sockets the subject holds now across
	// the cluster (as fresh as the presence).
	LiveConnections int `json:"live_connections"`
}

// rankedView is one subject of a top answer.
type rankedView struct {
	ID    string `json:"id"`
	Value int64  `json:"value"`
}

// topView is the answer of GET /api/v1/usage/top.
type topView struct {
	Kind   string       `json:"kind"`
	Metric string       `json:"metric"`
	Window string       `json:"window"`
	Top    []rankedView `json:"top"`
}

func (a *API) now() time.Time {
	if s := a.Sessions; s != nil && s.Manager != nil && s.Manager.Now != nil {
		return s.Manager.Now()
	}
	return time.Now()
}

// usageEnabled answers 404 when no usage store is configured.
func (a *API) usageEnabled(w http.ResponseWriter) bool {
	if a.Usage == nil {
		writeError(w, errorf(http.StatusNotFound, CodeNotFound, "usage is not recorded on this server"))
		return false
	}
	return true
}

// usageRange reads ?from, ?to and ?step: RFC 3339 times, step 1m, 1h or
// 1d (default 1m); to defaults to now and from to the step's default span
// before to.
func (a *API) usageRange(r *http.Request) (from, to time.Time, step usage.Step, e *apiError) {
	q := r.URL.Query()
	step = usage.Minute
	if v := q.Get("step"); v != "" {
		var err error
		if step, err = usage.ParseStep(v); err != nil {
			return from, to, step, errorf(http.StatusBadRequest, CodeBadRequest, "step must be 1m, 1h or 1d")
		}
	}
	to = a.now()
	if v := q.Get("to"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return from, to, step, errorf(http.StatusBadRequest, CodeBadRequest, "to must be an RFC 3339 time")
		}
		to = t
	}
	from = to.Add(-defaultSpan(step) + time.Duration(step))
	if v := q.Get("from"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return from, to, step, errorf(http.StatusBadRequest, CodeBadRequest, "from must be an RFC 3339 time")
		}
		from = t
	}
	if to.Before(from) {
		return from, to, step, errorf(http.StatusBadRequest, CodeBadRequest, "from must not be after to")
	}
	return from.UTC(), to.UTC(), step, nil
}

// usageError answers a failed usage query.
func (a *API) usageError(r *http.Request, err error) *apiError {
	if errors.Is(err, usage.ErrInvalid) {
		return errorf(http.StatusBadRequest, CodeBadRequest, "%s", err.Error())
	}
	return a.changeError(r, err)
}

// serveUsage answers the usage of subject s, with live connections as
// counted by live.
func (a *API) serveUsage(w http.ResponseWriter, r *http.Request, s usage.Subject, live func() (int, error)) {
	from, to, step, e := a.usageRange(r)
	if e != nil {
		writeError(w, e)
		return
	}
	pts, err := a.Usage.Series(r.Context(), s, from, to, step)
	if err != nil {
		writeError(w, a.usageError(r, err))
		return
	}
	v := usageView{Kind: s.Kind, ID: s.ID, Step: step.String(), From: from, To: to,
		Totals: map[string]int64{}, Points: make([]usagePoint, len(pts))}
	for i, p := range pts {
		v.Points[i] = usagePoint{Start: p.Start, Counts: p.Counts}
		if p.Counts == nil {
			v.Points[i].Counts = map[string]int64{}
		}
		for m, n := range p.Counts {
			if m == usage.PeakConnections {
				v.Totals[m] = max(v.Totals[m], n)
			} else {
				v.Totals[m] += n
			}
		}
	}
	if n, err := live(); err != nil {
		writeError(w, a.changeError(r, err))
		return
	} else {
		v.LiveConnections = n
	}
	writeJSON(w, http.StatusOK, v)
}

// userLive counts the live connections of a user across the cluster.
func (a *API) userLive(r *http.Request, userID string) func() (int, error) {
	return func() (int, error) {
		if a.Presence == nil {
			return 0, nil
		}
		list, err := a.Presence.UserConnections(r.Context(), userID)
		return len(list), err
	}
}

// keyConnections lists the live connections of the API key id across the
// cluster: the key's sockets are its owner's, marked with its ID. A key that
// no longer exists has none.
func (a *API) keyConnections(r *http.Request, id string) ([]sessionbridge.ConnInfo, error) {
	if a.Presence == nil || a.Keys == nil {
		return nil, nil
	}
	k, err := a.Keys.Get(r.Context(), id)
	if errors.Is(err, sessionbridge.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	list, err := a.Presence.UserConnections(r.Context(), k.UserID)
	if err != nil {
		return nil, err
	}
	out := list[:0]
	for _, c := range list {
		if c.KeyID == id {
			out = append(out, c)
		}
	}
	return out, nil
}

func (a *API) keyLive(r *http.Request, id string) func() (int, error) {
	return func() (int, error) {
		list, err := a.keyConnections(r, id)
		return len(list), err
	}
}

// adminKeyUsage serves GET /api/v1/keys/{id}/usage. The key need not exist
// any more: the usage of a revoked key stays until its buckets expire.
func (a *API) adminKeyUsage(w http.ResponseWriter, r *http.Request) {
	if !a.usageEnabled(w) {
		return
	}
	id, ok := keyID(w, r)
	if !ok {
		return
	}
	a.serveUsage(w, r, usage.Subject{Kind: usage.KindKey, ID: id}, a.keyLive(r, id))
}

// adminUserUsage serves GET /api/v1/users/{user_id}/usage.
func (a *API) adminUserUsage(w http.ResponseWriter, r *http.Request) {
	if !a.usageEnabled(w) {
		return
	}
	id := r.PathValue("user_id")
	if e := checkUserID(id); e != nil {
		writeError(w, e)
		return
	}
	a.serveUsage(w, r, usage.Subject{Kind: usage.KindUser, ID: id}, a.userLive(r, id))
}

// myUsage serves GET /auth/usage: the signed-in user's own.
func (a *API) myUsage(w http.ResponseWriter, r *http.Request) {
	if !a.usageEnabled(w) {
		return
	}
	me := current(r).UserID
	a.serveUsage(w, r, usage.Subject{Kind: usage.KindUser, ID: me}, a.userLive(r, me))
}

// myKeyUsage serves GET /auth/keys/{id}/usage for a key of the signed-in
// user.
func (a *API) myKeyUsage(w http.ResponseWriter, r *http.Request) {
	if !a.keysEnabled(w) || !a.usageEnabled(w) {
		return
	}
	k, ok := a.myKey(w, r, "read API key usage")
	if !ok {
		return
	}
	a.serveUsage(w, r, usage.Subject{Kind: usage.KindKey, ID: k.ID}, a.keyLive(r, k.ID))
}

// topMetric is what ?metric of a top query may be: a counted metric, or
// one by reason or code.
var topMetric = regexp.MustCompile(`^(connects|connects_refused:[a-z_]{1,32}|frames_in|frames_out|bytes_in|bytes_out|errors:[a-z_]{1,32}|rate_limited|forbidden|connected_seconds)$`)

// adminTop serves GET /api/v1/usage/top.
func (a *API) adminTop(w http.ResponseWriter, r *http.Request) {
	if !a.usageEnabled(w) {
		return
	}
	q := r.URL.Query()
	kind := q.Get("kind")
	switch kind {
	case "":
		kind = usage.KindKey
	case usage.KindKey, usage.KindUser:
	default:
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "kind must be key or user"))
		return
	}
	metric := q.Get("metric")
	if metric == "" {
		metric = usage.FramesIn
	}
	if !topMetric.MatchString(metric) {
		writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "metric must be a counted usage metric (peak_connections is not ranked)"))
		return
	}
	window := DefaultTopWindow
	if v := q.Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Hour || d > usage.MaxTopWindow {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "window must be a duration from 1h to %dh", int(usage.MaxTopWindow/time.Hour)))
			return
		}
		window = d
	}
	limit := DefaultTopLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > usage.MaxTopLimit {
			writeError(w, errorf(http.StatusBadRequest, CodeBadRequest, "limit must be from 1 to %d", usage.MaxTopLimit))
			return
		}
		limit = n
	}
	top, err := a.Usage.Top(r.Context(), kind, metric, window, limit)
	if err != nil {
		writeError(w, a.usageError(r, err))
		return
	}
	v := topView{Kind: kind, Metric: metric, Window: window.String(), Top: make([]rankedView, len(top))}
	for i, t := range top {
		v.Top[i] = rankedView{ID: t.ID, Value: t.Value}
	}
	writeJSON(w, http.StatusOK, v)
}
