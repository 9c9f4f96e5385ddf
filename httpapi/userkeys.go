package httpapi

import (
	"net/http"

	"github.com/sessionbridge/sessionbridge/audit"
)

// adminDeleteUserKeys revokes every API key of a user: DELETE
// /api/v1/users/{user_id}/keys. It is the tool of an application whose users
// live in the application when it deletes one: each key is revoked with its
// own event, so its sockets close on every node (4401 api_key_revoked). The
// answer lists the IDs revoked; a store failure part way answers 503 after
// auditing the keys already revoked, and a retry revokes the rest.
func (a *API) adminDeleteUserKeys(w http.ResponseWriter, r *http.Request) {
	if !a.keysEnabled(w) {
		return
	}
	userID := r.PathValue("user_id")
	if e := checkUserID(userID); e != nil {
		writeError(w, e)
		return
	}
	gone, err := a.Keys.DeleteUser(r.Context(), userID)
	ids := make([]string, 0, len(gone))
	for _, k := range gone {
		ids = append(ids, k.ID)
		a.Audit.Log(r.Context(), audit.APIKeyRevoked, a.adminFields(r, audit.Fields{KeyID: k.ID, UserID: k.UserID, Detail: "all keys of the user revoked"}))
	}
	if err != nil {
		writeError(w, a.keyError(r, err))
		return
	}
	writeJSON(w, http.StatusOK, revoked(ids))
}
