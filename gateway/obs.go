package gateway

import (
	"github.com/sessionbridge/sessionbridge/audit"
)

// Audit events the gateway records.
const (
	auditAuthnFailed    = audit.AuthnFailed
	auditAuthzFail      = audit.AuthzFail
	auditWSConnected    = audit.WSConnected
	auditWSDisconnected = audit.WSDisconnected
	auditSessionRevoked = audit.SessionRevoked
	auditSessionExpired = audit.SessionExpired
	auditSessionUpdated = audit.SessionUpdated
	auditTokenRefreshed = audit.AuthnTokenRefreshed
)

type auditFields = audit.Fields
