// Package metrics defines the Prometheus metrics of sessionbridge, all named
// sessionbridge_*: live connections by authentication method, connects and
// disconnects by outcome, authentication latency, frames by type and result,
// session events through the bus (published, received, applied) and their
// apply lag, resyncs after a bus outage, Redis errors and reconnects, and
// session changes.
//
// Every label has a bounded set of values. Callers pass values from the fixed
// vocabularies documented on each method; anything else is counted as "other",
// and open-ended labels (frame types, close reasons, Redis operations) also
// stop taking new values after a fixed number of distinct ones, so a hostile
// client cannot blow up the number of series.
//
// A nil *Metrics records nothing, so components take one without checking.
package metrics
