// Command sessionbridge runs the sessionbridge server and manages its users
// file.
//
//	sessionbridge serve [flags]          run the server (see docs/configuration.md)
//	sessionbridge user add <name>        add a user to the users file
//	sessionbridge user remove <name>     remove a user
//	sessionbridge user list              list the users
//	sessionbridge key create|list|roll|revoke  manage API keys of a running server
//	sessionbridge version                print the version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal starts the drain, a second one kills the
		// process the default way.
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usage = `sessionbridge: HTTP sessions and WebSockets as one thing.

Usage:
  sessionbridge serve [flags]                      run the server
  sessionbridge user add <username> [flags]        add a user to the users file
  sessionbridge user remove <username> [--users FILE]
  sessionbridge user list [--users FILE]
  sessionbridge key create|list|roll|revoke [flags]  manage API keys of a running server
  sessionbridge version                            print the version

Run "sessionbridge serve -h", "sessionbridge user add -h" or "sessionbridge key help" for flags.
`

// run is the whole program: it returns the exit code instead of exiting, and
// stops serving when ctx is done.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "user":
		return user(args[1:], stdin, stdout, stderr)
	case "key":
		return key(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version())
		return exitOK
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "sessionbridge: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// version describes the build: module version, VCS revision when recorded,
// and the Go version.
func version() string {
	v, rev := "(devel)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " " + s.Value[:12]
			}
		}
	}
	return fmt.Sprintf("sessionbridge %s%s %s %s/%s", v, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
