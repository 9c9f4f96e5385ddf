// Package users manages the users file: the accounts that may log in with a
// username and password (POST /auth/login), maintained by the
// "sessionbridge user add|remove|list" commands.
//
// The file is JSON:
//
//	{"users": [{"username": "alice", "hash": "$argon2id$v=19$m=19456,t=2,p=1$...",
//	            "scopes": ["*"], "created_at": "2026-01-02T03:04:05Z"}]}
//
// Passwords are stored only as argon2id hashes in PHC string form (the
// default, with the OWASP parameters m=19456 KiB, t=2, p=1) or as bcrypt
// hashes ($2a$, $2b$, $2y$, cost 12 by default). Verification compares in
// constant time, and a login for an unknown user costs as much as one for a
// known user, so that response times do not reveal which usernames exist.
//
// A File is safe for concurrent use. The server loads it once and calls Reload
// (on a signal, say) to pick up changes the command line tool saved.
package users
