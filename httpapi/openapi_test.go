package httpapi

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge"
)

// openAPIDocument is the part of the document the tests read.
type openAPIDocument struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas    map[string]schema          `json:"schemas"`
		Parameters map[string]json.RawMessage `json:"parameters"`
	} `json:"components"`
}

type schema struct {
	Properties map[string]json.RawMessage `json:"properties"`
	AllOf      []schema                   `json:"allOf"`
	Ref        string                     `json:"$ref"`
}

type operation struct {
	OperationID string            `json:"operationId"`
	Parameters  []json.RawMessage `json:"parameters"`
	Responses   map[string]any    `json:"responses"`
}

// serverOnlyPaths are served by the server next to the API (the gateway and
// the metrics), not by the API's own handler.
var serverOnlyPaths = []string{"/ws", "/metrics"}

func loadOpenAPI(t *testing.T) openAPIDocument {
	t.Helper()
	var doc openAPIDocument
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("the OpenAPI document is not JSON: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	return doc
}

// TestOpenAPIMatchesRoutes: every route the API serves is in the document
// with exactly its methods, and the document names no other route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	served := map[string][]string{}
	for _, r := range (&API{Sessions: &Sessions{}}).Routes() {
		served[r.Path] = r.Methods
	}
	for path, methods := range served {
		ops, ok := doc.Paths[path]
		if !ok {
			t.Errorf("route %s is not in the OpenAPI document", path)
			continue
		}
		var documented []string
		for m := range ops {
			documented = append(documented, strings.ToUpper(m))
		}
		slices.Sort(documented)
		if !slices.Equal(documented, methods) {
			t.Errorf("%s: the document has %v, the server answers %v", path, documented, methods)
		}
	}
	for path := range doc.Paths {
		if _, ok := served[path]; !ok && !slices.Contains(serverOnlyPaths, path) {
			t.Errorf("the document names %s, which no handler serves", path)
		}
	}
	if len(served) < 20 {
		t.Fatalf("only %d routes: the route table was not walked", len(served))
	}
}

// TestOpenAPIWellFormed: every $ref resolves, operation IDs are unique, and
// every path parameter is declared.
func TestOpenAPIWellFormed(t *testing.T) {
	doc := loadOpenAPI(t)
	var raw map[string]any
	if err := json.Unmarshal(openAPIDoc, &raw); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	refs := 0
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"].(string); ok {
				refs++
				if !resolves(raw, r) {
					t.Errorf("$ref %s does not resolve", r)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(raw)
	if refs == 0 {
		t.Fatal("no $ref found: the walk is broken")
	}
	ids := map[string]string{}
	param := regexp.MustCompile(`\{([a-z_]+)\}`)
	for path, ops := range doc.Paths {
		for method, rawOp := range ops {
			var op operation
			if err := json.Unmarshal(rawOp, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			if op.OperationID == "" || len(op.Responses) == 0 {
				t.Errorf("%s %s: no operationId or no responses", method, path)
			}
			if prev, dup := ids[op.OperationID]; dup {
				t.Errorf("operationId %s used by %s and %s %s", op.OperationID, prev, method, path)
			}
			ids[op.OperationID] = method + " " + path
			for _, m := range param.FindAllStringSubmatch(path, -1) {
				found := false
				for _, p := range op.Parameters {
					var def struct {
						Ref      string `json:"$ref"`
						Name, In string
					}
					if json.Unmarshal(p, &def) != nil {
						continue
					}
					if def.Ref != "" {
						json.Unmarshal(doc.Components.Parameters[strings.TrimPrefix(def.Ref, "#/components/parameters/")], &def)
					}
					found = found || (def.Name == m[1] && def.In == "path")
				}
				if !found {
					t.Errorf("%s %s: path parameter %s is not declared", method, path, m[1])
				}
			}
		}
	}
}

func resolves(doc map[string]any, ref string) bool {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	var cur any = doc
	for _, part := range strings.Split(p, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}

// jsonNames returns the JSON member names of a struct type, with embedded
// structs flattened as encoding/json does.
func jsonNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			out = append(out, jsonNames(f.Type)...)
			continue
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func (d openAPIDocument) propertyNames(s schema) []string {
	names := map[string]bool{}
	var add func(s schema)
	add = func(s schema) {
		if s.Ref != "" {
			add(d.Components.Schemas[strings.TrimPrefix(s.Ref, "#/components/schemas/")])
		}
		for n := range s.Properties {
			names[n] = true
		}
		for _, x := range s.AllOf {
			add(x)
		}
	}
	add(s)
	return slices.Sorted(maps.Keys(names))
}

// TestOpenAPISchemasMatchTypes: each schema has exactly the members of the
// Go type the server reads or writes for it.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	for name, v := range map[string]any{
		"APIKey": keyView{}, "IssuedKey": issuedKey{}, "KeyList": keyList{},
		"KeyCreateRequest": keyCreateRequest{}, "MyKeyCreateRequest": myKeyRequest{}, "KeyPatchRequest": keyPatchRequest{},
		"RollRequest": keyRollRequest{}, "VerifyRequest": keyVerifyRequest{}, "VerifyResponse": keyVerifyResponse{},
		"Limits": sessionbridge.Limits{}, "PublicSession": sessionbridge.PublicSession{}, "Device": sessionbridge.Device{},
		"SessionView": sessionView{}, "SessionList": sessionList{}, "RevokedList": revokedList{},
		"ConnInfo": sessionbridge.ConnInfo{}, "ConnectionList": connectionList{},
		"CreateSessionRequest": createRequest{}, "DeviceRequest": deviceRequest{}, "CreatedSession": createResponse{},
		"PublishRequest": publishRequest{}, "LoginRequest": loginRequest{}, "Ticket": ticketResponse{},
		"Usage": usageView{}, "UsagePoint": usagePoint{}, "UsageTop": topView{}, "Ranked": rankedView{},
		"Error": errorBody{},
	} {
		s, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("no schema %s", name)
			continue
		}
		if got, want := doc.propertyNames(s), jsonNames(reflect.TypeOf(v)); !slices.Equal(got, want) {
			t.Errorf("schema %s has %v, the Go type %T %v", name, got, v, want)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	f := newFixture(t)
	resp := f.do(req{method: "GET", path: "/openapi.json"})
	expect(t, resp, http.StatusOK)
	if resp.Header.Get("Content-Type") != "application/json" || !bytes.Equal(resp.body, openAPIDoc) {
		t.Fatalf("GET /openapi.json: %s, %d bytes", resp.Header.Get("Content-Type"), len(resp.body))
	}
	expect(t, f.do(req{method: "HEAD", path: "/openapi.json"}), http.StatusOK)
	expect(t, f.do(req{method: "POST", path: "/openapi.json", body: "{}"}), http.StatusMethodNotAllowed)
}
