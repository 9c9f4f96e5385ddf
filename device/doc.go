// Package device extracts facts about the client behind an HTTP request: a
// coarse browser, operating system and device type parsed from the User-Agent
// header, and the client's IP address as seen through trusted reverse proxies.
//
// The results are descriptive only. A User-Agent is whatever the client chose
// to send, so nothing here may be used for an access decision; ClientIP is the
// one fact that can be relied on, and only as far as the trusted proxy list is
// correct.
package device
