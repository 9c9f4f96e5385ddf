// Package clustertest holds the tests of several sessionbridge nodes sharing
// one Redis: nodes built in one process from the redis, gateway and root
// packages, and real `sessionbridge serve` processes. It has no non-test
// code besides this comment.
package clustertest
