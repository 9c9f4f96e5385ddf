package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

const keyUsage = `Usage:
  sessionbridge key create --user ID --name NAME [--scope PATTERN]... [--ttl DURATION]
                           [--limits JSON] [--meta JSON] [--json]
  sessionbridge key list --user ID [--json]
  sessionbridge key roll <key-id> [--grace DURATION] [--json]
  sessionbridge key revoke <key-id>
  sessionbridge key revoke --user ID      (every key of the user)

Every command talks to a running server's admin API:
  --url URL            the server (default http://localhost:8080; SESSIONBRIDGE_URL)
  --admin-token TOKEN  its admin token (SESSIONBRIDGE_ADMIN_TOKEN; prefer the variable)

create and roll print the new key, once, alone on standard output (so that
KEY=$(sessionbridge key create ...) works) and what it is on standard error.
`

// keyClientTimeout bounds one call to the admin API.
const keyClientTimeout = 30 * time.Second

// keyView is the public view of a key, as the admin API answers it.
type keyView struct {
	Key        string          `json:"key,omitempty"`
	ID         string          `json:"id"`
	UserID     string          `json:"user_id"`
	Name       string          `json:"name"`
	Scopes     []string        `json:"scopes"`
	Limits     json.RawMessage `json:"limits"`
	Meta       json.RawMessage `json:"meta"`
	CreatedAt  time.Time       `json:"created_at"`
	ExpiresAt  *time.Time      `json:"expires_at"`
	LastUsedAt *time.Time      `json:"last_used_at"`
	LastIP     *string         `json:"last_ip"`
	Version    uint64          `json:"version"`
}

// adminClient calls the admin API of one server.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// apiFailure is an error answer of the admin API.
type apiFailure struct {
	Status  int
	Code    string
	Message string
}

func (e *apiFailure) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("the server answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code)
}

// call sends body (if not nil) as JSON and decodes a 2xx answer into out
// (if not nil).
func (c *adminClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The URL holds no secret, but the error may quote it: keep it.
		return fmt.Errorf("cannot reach the server: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		f := &apiFailure{Status: resp.StatusCode}
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &e) == nil {
			f.Code, f.Message = e.Error, e.Message
		}
		return f
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the server's answer is not what a sessionbridge server sends: %w", err)
	}
	return nil
}

func key(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, keyUsage)
		return exitUsage
	}
	sub := args[0]
	switch sub {
	case "create", "list", "roll", "revoke":
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, keyUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "sessionbridge key: unknown command %q\n\n%s", sub, keyUsage)
		return exitUsage
	}
	fs := flag.NewFlagSet("sessionbridge key "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://localhost:8080", "URL of the running server")
	token := fs.String("admin-token", "", "admin token of the server (prefer SESSIONBRIDGE_ADMIN_TOKEN: flags show in ps)")
	var (
		userID, name, limits, meta string
		scopes                     listFlag
		ttl, grace                 time.Duration
		asJSON                     bool
	)
	switch sub {
	case "create":
		fs.StringVar(&userID, "user", "", "owner of the key (required)")
		fs.StringVar(&name, "name", "", "name of the key (required)")
		fs.Var(&scopes, "scope", "scope pattern (repeatable, or comma-separated)")
		fs.DurationVar(&ttl, "ttl", 0, "lifetime of the key (default: the server's maximum, or no expiry)")
		fs.StringVar(&limits, "limits", "", `rate-limit overrides as a JSON object, e.g. {"max_connections":5}`)
		fs.StringVar(&meta, "meta", "", "the application's own JSON object")
	case "list":
		fs.StringVar(&userID, "user", "", "whose keys (required)")
	case "roll":
		fs.DurationVar(&grace, "grace", 0, "how long the old key keeps working (at most 168h; default: it stops now)")
	case "revoke":
		fs.StringVar(&userID, "user", "", "revoke every key of this user instead of one key")
	}
	if sub != "revoke" {
		fs.BoolVar(&asJSON, "json", false, "print the server's JSON answer instead")
	}
	pos, err := parse(fs, args[1:], "url", "admin-token")
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sessionbridge key %s: %s\n", sub, fmt.Sprintf(format, a...))
		return exitUsage
	}
	if err != nil {
		return usageErr("%v", err)
	}
	wantPos := 0
	if sub == "roll" || sub == "revoke" && userID == "" {
		wantPos = 1
	}
	if len(pos) != wantPos {
		fmt.Fprint(stderr, keyUsage)
		return exitUsage
	}
	if *token == "" {
		return usageErr("no admin token: set SESSIONBRIDGE_ADMIN_TOKEN or pass --admin-token")
	}
	u, err := url.Parse(*base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErr("--url %q: want http(s)://host[:port]", *base)
	}
	c := &adminClient{base: strings.TrimRight(*base, "/"), token: *token, http: &http.Client{Timeout: keyClientTimeout}}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "sessionbridge key %s: %v\n", sub, err)
		return exitError
	}

	switch sub {
	case "create":
		if userID == "" || name == "" {
			return usageErr("--user and --name are required")
		}
		body := map[string]any{"user_id": userID, "name": name, "scopes": splitScopes(scopes)}
		if ttl < 0 {
			return usageErr("--ttl must not be negative")
		}
		if ttl > 0 {
			body["ttl_seconds"] = int64((ttl + time.Second - 1) / time.Second)
		}
		for flagName, v := range map[string]string{"limits": limits, "meta": meta} {
			if v == "" {
				continue
			}
			if !json.Valid([]byte(v)) {
				return usageErr("--%s must be a JSON object", flagName)
			}
			body[flagName] = json.RawMessage(v)
		}
		var k keyView
		if err := c.call(ctx, http.MethodPost, "/api/v1/keys", body, &k); err != nil {
			return fail(err)
		}
		return printIssued(stdout, stderr, k, asJSON, fmt.Sprintf("created API key %s for %s", k.ID, k.UserID))
	case "list":
		if userID == "" {
			return usageErr("--user is required")
		}
		var list struct {
			Keys []keyView `json:"keys"`
		}
		if err := c.call(ctx, http.MethodGet, "/api/v1/users/"+url.PathEscape(userID)+"/keys", nil, &list); err != nil {
			return fail(err)
		}
		if asJSON {
			return printJSON(stdout, list)
		}
		printKeyTable(stdout, list.Keys, time.Now())
		return exitOK
	case "roll":
		if grace < 0 {
			return usageErr("--grace must not be negative")
		}
		var k keyView
		body := map[string]int64{"grace_seconds": int64((grace + time.Second - 1) / time.Second)}
		if err := c.call(ctx, http.MethodPost, "/api/v1/keys/"+url.PathEscape(pos[0])+"/roll", body, &k); err != nil {
			return fail(err)
		}
		until := "now"
		if grace > 0 {
			until = "for " + grace.String() + " at most"
		}
		return printIssued(stdout, stderr, k, asJSON, fmt.Sprintf("rolled API key %s into %s; the old key keeps working %s", pos[0], k.ID, until))
	default: // revoke
		if userID != "" {
			var out struct {
				Revoked []string `json:"revoked"`
			}
			err := c.call(ctx, http.MethodDelete, "/api/v1/users/"+url.PathEscape(userID)+"/keys", nil, &out)
			for _, id := range out.Revoked {
				fmt.Fprintf(stdout, "revoked API key %s\n", id)
			}
			if err != nil {
				return fail(err)
			}
			fmt.Fprintf(stderr, "sessionbridge: revoked %d API keys of %s\n", len(out.Revoked), userID)
			return exitOK
		}
		if err := c.call(ctx, http.MethodDelete, "/api/v1/keys/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "revoked API key %s\n", pos[0])
		return exitOK
	}
}

// splitScopes flattens repeated and comma-separated --scope values; no
// scope pattern holds a comma.
func splitScopes(l listFlag) []string {
	out := []string{}
	for _, v := range l {
		out = append(out, splitList(v)...)
	}
	return out
}

// printIssued shows a new key: alone on stdout, described on stderr.
func printIssued(stdout, stderr io.Writer, k keyView, asJSON bool, what string) int {
	if asJSON {
		return printJSON(stdout, k)
	}
	fmt.Fprintln(stdout, k.Key)
	fmt.Fprintf(stderr, "sessionbridge: %s\n  name:    %s\n  scopes:  %s\n  expires: %s\nThe key is shown this once; the server keeps only its hash.\n",
		what, k.Name, scopeList(k.Scopes), timeOr(k.ExpiresAt, "never"))
	return exitOK
}

func printJSON(w io.Writer, v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return exitError
	}
	fmt.Fprintf(w, "%s\n", b)
	return exitOK
}

func printKeyTable(w io.Writer, list []keyView, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tCREATED\tEXPIRES\tLAST USED")
	for _, k := range list {
		expires := timeOr(k.ExpiresAt, "never")
		if k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
			expires += " (expired)"
		}
		used := timeOr(k.LastUsedAt, "never")
		if k.LastIP != nil {
			used += " from " + *k.LastIP
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, cell(k.Name), cell(scopeList(k.Scopes)), k.CreatedAt.UTC().Format(time.RFC3339), expires, used)
	}
	tw.Flush()
}

func scopeList(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, " ")
}

// cell makes a value fit one table cell: names are free text, and a tab or
// newline in one would break the table.
func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func timeOr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}
