package sessionbridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// MergePatch applies an RFC 7386 JSON merge patch to doc, a JSON object, and
// returns the resulting object. The patch must itself be a JSON object: session
// data is always an object, and a non-object patch would replace it whole.
func MergePatch(doc, patch json.RawMessage) (json.RawMessage, error) {
	var p map[string]any
	if err := decodeObject(patch, &p); err != nil {
		return nil, fmt.Errorf("%w: patch: %v", ErrInvalidPatch, err)
	}
	var d map[string]any
	if len(bytes.TrimSpace(doc)) == 0 {
		d = map[string]any{}
	} else if err := decodeObject(doc, &d); err != nil {
		return nil, fmt.Errorf("%w: document: %v", ErrInvalidPatch, err)
	}
	out, err := json.Marshal(mergeObject(d, p))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPatch, err)
	}
	return out, nil
}

// ValidObject reports whether b is a single JSON object.
func ValidObject(b json.RawMessage) bool {
	var m map[string]any
	return decodeObject(b, &m) == nil
}

func decodeObject(b []byte, into *map[string]any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if *into == nil {
		return fmt.Errorf("not a JSON object")
	}
	// More would miss a stray ']' or '}'; only the end of input may follow.
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after JSON object")
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
