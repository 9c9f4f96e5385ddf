package sessionbridge

import "errors"

// Sentinel errors that callers branch on. Implementations wrap them with %w.
var (
	// ErrNotFound means the session does not exist (never did, was deleted, or
	// was removed after expiry).
	ErrNotFound = errors.New("sessionbridge: session not found")
	// ErrExists means a session with that ID already exists.
	ErrExists = errors.New("sessionbridge: session already exists")
	// ErrVersionConflict means a conditional write saw a different version than
	// the caller expected: somebody else changed the session first.
	ErrVersionConflict = errors.New("sessionbridge: session version conflict")
	// ErrInvalidToken means a credential is malformed, unknown or does not match.
	// Callers must not reveal which of these it was.
	ErrInvalidToken = errors.New("sessionbridge: invalid token")
	// ErrExpired means the session's idle or absolute deadline has passed.
	ErrExpired = errors.New("sessionbridge: session expired")
	// ErrUnavailable means the store or bus cannot be reached. Authentication
	// fails closed on it (HTTP 503).
	ErrUnavailable = errors.New("sessionbridge: store unavailable")
	// ErrInvalidPatch means an update is not a JSON object merge patch, or the
	// result is not a JSON object.
	ErrInvalidPatch = errors.New("sessionbridge: invalid merge patch")
	// ErrDataTooLarge means session data, as created or after an update,
	// would be larger than the Manager's MaxDataBytes.
	ErrDataTooLarge = errors.New("sessionbridge: session data too large")
	// ErrDataTooDeep means session data, as created or after an update,
	// would nest arrays and objects deeper than the Manager's MaxDataDepth.
	ErrDataTooDeep = errors.New("sessionbridge: session data nested too deep")
	// ErrInvalidUserID means a user ID breaks the rules of CheckUserID.
	ErrInvalidUserID = errors.New("sessionbridge: invalid user ID")
	// ErrForbidden means the principal lacks a scope or right for the action.
	ErrForbidden = errors.New("sessionbridge: forbidden")
)
