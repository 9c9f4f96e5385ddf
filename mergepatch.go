package sessionbridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/sessionbridge/sessionbridge/internal/strictjson"
)

// MergePatch applies an RFC 7386 JSON merge patch to doc, a JSON object, and
// returns the resulting object. The patch must itself be a JSON object (session
// data is always an object, and a non-object patch would replace it whole), and
// pass CheckObject. The document is the stored data and is read as it is, but
// may not nest deeper than the patch could.
func MergePatch(doc, patch json.RawMessage) (json.RawMessage, error) {
	if err := checkObject(patch); err != nil {
		return nil, fmt.Errorf("%w: patch: %v", ErrInvalidPatch, err)
	}
	var p map[string]any
	if err := decodeObject(patch, &p); err != nil {
		return nil, fmt.Errorf("%w: patch: %v", ErrInvalidPatch, err)
	}
	var d map[string]any
	if len(bytes.TrimSpace(doc)) == 0 {
		d = map[string]any{}
	} else if strictjson.Depth(doc) > strictjson.MaxDepth {
		return nil, fmt.Errorf("%w: document: nested deeper than %d levels", ErrInvalidPatch, strictjson.MaxDepth)
	} else if err := decodeObject(doc, &d); err != nil {
		return nil, fmt.Errorf("%w: document: %v", ErrInvalidPatch, err)
	}
	out, err := json.Marshal(mergeObject(d, p))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPatch, err)
	}
	return out, nil
}

// CheckObject returns nil if b is a single JSON object that decodes one way
// only: exact member names, no name twice in one object, valid UTF-8, at
// most 128 levels deep. Otherwise it returns an error wrapping
// ErrInvalidPatch whose message says what is wrong, never quoting a value.
func CheckObject(b json.RawMessage) error {
	if err := checkObject(b); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidPatch, err)
	}
	return nil
}

func checkObject(b []byte) error {
	if err := strictjson.Validate(b); err != nil {
		return err
	}
	// Validate accepted exactly one value, so there is a first byte.
	if t := bytes.TrimLeft(b, " \t\r\n"); t[0] != '{' {
		return errors.New("not a JSON object")
	}
	return nil
}

// ValidObject reports whether b passes CheckObject.
func ValidObject(b json.RawMessage) bool {
	return CheckObject(b) == nil
}

// decodeObject reads b, one JSON object, with numbers kept exact.
func decodeObject(b []byte, into *map[string]any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if *into == nil {
		return errors.New("not a JSON object")
	}
	// More would miss a stray ']' or '}'; only the end of input may follow.
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after JSON object")
	}
	return nil
}

func mergeObject(doc, patch map[string]any) map[string]any {
	for k, pv := range patch {
		if pv == nil {
			delete(doc, k)
			continue
		}
		if pobj, ok := pv.(map[string]any); ok {
			dobj, ok := doc[k].(map[string]any)
			if !ok {
				dobj = map[string]any{}
			}
			doc[k] = mergeObject(dobj, pobj)
			continue
		}
		doc[k] = pv
	}
	return doc
}
