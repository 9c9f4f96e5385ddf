// Package loadtest drives a running sessionbridge node or cluster from the
// outside, over real HTTP and WebSocket connections, and measures what the
// design promises: connect+auth throughput and handshake latency, memory per
// idle authenticated socket, cross-node revocation and update latency, the
// fan-out of a user-wide logout, stability under connect/disconnect churn,
// and (asked for by name, with the Redis URL) the Redis commands usage
// recording costs at N busy sockets.
//
// It is the logic of the sessionbridge-bench command, kept importable so that
// it can be tested against an in-process server. Every loop it runs is bounded
// by a count and by time, and by default it refuses any target that is not a
// loopback address, so that it cannot be pointed at somebody else's server by
// mistake.
package loadtest
