package sessionbridge

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// MaxUserIDLen is the longest user ID, in bytes.
const MaxUserIDLen = 256

// CheckUserID returns nil if id can name a user, else an error wrapping
// ErrInvalidUserID that says why. A user ID is 1 to MaxUserIDLen bytes of
// valid UTF-8 without control characters (C0, DEL, C1) and without U+FFFD.
//
// Every door through which a user ID enters (Manager.Create, the admin API,
// JWT subjects, the users file, other token verifiers) applies it, so that a
// user ID names one user only: bytes that are not UTF-8 would reach a decoder
// or a log that replaces them with U+FFFD, and "\xffroot" and "\xferoot"
// would both become "\ufffdroot"; refusing U+FFFD itself also refuses IDs
// that some earlier step already collapsed that way. Control characters would
// let an ID forge lines in logs and audit records.
func CheckUserID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidUserID)
	case len(id) > MaxUserIDLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidUserID, MaxUserIDLen)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidUserID)
	}
	for _, r := range id {
		switch {
		case unicode.IsControl(r):
			return fmt.Errorf("%w: contains a control character", ErrInvalidUserID)
		case r == utf8.RuneError:
			return fmt.Errorf("%w: contains U+FFFD, the replacement for invalid text", ErrInvalidUserID)
		}
	}
	return nil
}
