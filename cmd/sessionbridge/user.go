package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/sessionbridge/sessionbridge/internal/server"
	"github.com/sessionbridge/sessionbridge/users"
)

// minPasswordLen is the shortest password `user add` accepts.
const minPasswordLen = 8

const userUsage = `Usage:
  sessionbridge user add <username> [--password-stdin] [--bcrypt] [--users FILE]
  sessionbridge user remove <username> [--users FILE]
  sessionbridge user list [--users FILE]
`

func user(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, userUsage)
		return exitUsage
	}
	sub := args[0]
	fs := flag.NewFlagSet("sessionbridge user "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("users", server.DefaultUsersFile, "users file")
	var passwordStdin, useBcrypt bool
	if sub == "add" {
		fs.BoolVar(&passwordStdin, "password-stdin", false, "read the password as one line from standard input")
		fs.BoolVar(&useBcrypt, "bcrypt", false, "hash with bcrypt (cost 12) instead of argon2id")
	}
	pos, err := parse(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "sessionbridge user %s: %v\n", sub, err)
		return exitUsage
	}
	want := 1
	if sub == "list" {
		want = 0
	}
	if sub != "add" && sub != "remove" && sub != "list" {
		fmt.Fprintf(stderr, "sessionbridge user: unknown command %q\n\n%s", sub, userUsage)
		return exitUsage
	}
	if len(pos) != want {
		fmt.Fprint(stderr, userUsage)
		return exitUsage
	}
	f, err := users.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "sessionbridge user %s: %v\n", sub, err)
		return exitError
	}
	switch sub {
	case "list":
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USERNAME\tCREATED")
		for _, u := range f.List() {
			created := "-"
			if !u.CreatedAt.IsZero() {
				created = u.CreatedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\n", u.Username, created)
		}
		tw.Flush()
		return exitOK
	case "remove":
		if err := f.Remove(pos[0]); err != nil {
			fmt.Fprintf(stderr, "sessionbridge user remove: %v\n", err)
			return exitError
		}
		if err := f.Save(); err != nil {
			fmt.Fprintf(stderr, "sessionbridge user remove: %v\n", err)
			return exitError
		}
		fmt.Fprintf(stdout, "removed user %s from %s (their open sessions stay until they expire or are revoked)\n", pos[0], *path)
		return exitOK
	}
	pw, err := readPassword(stdin, stderr, passwordStdin)
	if err != nil {
		fmt.Fprintf(stderr, "sessionbridge user add: %v\n", err)
		return exitError
	}
	algo := users.Argon2id
	if useBcrypt {
		algo = users.Bcrypt
	}
	if err := f.Add(pos[0], pw, algo); err != nil {
		fmt.Fprintf(stderr, "sessionbridge user add: %v\n", err)
		return exitError
	}
	if err := f.Save(); err != nil {
		fmt.Fprintf(stderr, "sessionbridge user add: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "added user %s to %s\n", pos[0], *path)
	return exitOK
}

// readPassword reads the new password: one line from stdin with
// --password-stdin, else twice without echo from the terminal.
func readPassword(stdin io.Reader, stderr io.Writer, fromStdin bool) (string, error) {
	var pw string
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", fmt.Errorf("reading the password from stdin: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
	} else {
		f, ok := stdin.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return "", errors.New("standard input is not a terminal: pass the password with --password-stdin")
		}
		fd := int(f.Fd())
		fmt.Fprint(stderr, "Password: ")
		first, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		fmt.Fprint(stderr, "Password again: ")
		second, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		if string(first) != string(second) {
			return "", errors.New("the passwords differ")
		}
		pw = string(first)
	}
	if len([]rune(pw)) < minPasswordLen {
		return "", fmt.Errorf("the password must have at least %d characters", minPasswordLen)
	}
	return pw, nil
}
