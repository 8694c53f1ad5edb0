package shell

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hsmsh/hsmsh/commands"
)

const serveUsage = "usage: hsmsh serve --config FILE --id ID [--data-dir DIR | --ephemeral] [--restore BACKUP-FILE (password in HSMSH_BACKUP_PASSWORD)] [--lab]"

// serveCommand is hsmsh serve: one HSM server of a remote cluster, until
// SIGTERM or SIGINT. It logs to stderr, one line per connection and per
// sync pass that changed something.
func serveCommand(g globals, args []string, stdout, stderr io.Writer) int {
	fail := func(msg string) int {
		fmt.Fprintf(stderr, "hsmsh serve: %s\n%s\n", msg, serveUsage)
		return 2
	}
	var id, restore string
	var lab bool
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		value := func() (string, bool) {
			if hasVal {
				return val, true
			}
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				return "", false
			}
			i++
			return args[i], true
		}
		var ok bool
		switch name {
		case "--config":
			g.configPath, ok = value()
		case "--id":
			id, ok = value()
		case "--data-dir":
			g.dataDir, ok = value()
		case "--ephemeral":
			g.ephemeral, ok = true, !hasVal
		case "--restore":
			restore, ok = value()
		case "--lab":
			// The lab's calls (sync pause, resume and now; latency) are
			// served only when asked for: they let any client of the
			// cluster slow or stall it, which a teacher wants and an
			// admin does not.
			lab, ok = true, !hasVal
		default:
			return fail(fmt.Sprintf("unknown flag %q", args[i]))
		}
		if !ok {
			return fail(name + " needs a value")
		}
	}
	if id == "" {
		return fail("--id is required: the id of this server in the config's [[cluster.servers]]")
	}
	cfg, err := loadConfig(g)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh serve: %v\n", err)
		return 1
	}
	dir, err := dataDir(g)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh serve: %v\n", err)
		return 1
	}
	var backup []byte
	password := os.Getenv("HSMSH_BACKUP_PASSWORD")
	if restore != "" {
		// A server has no terminal to ask on: the password comes from the
		// environment, never from the command line (ps would show it).
		if password == "" {
			return fail("--restore needs the backup's password in HSMSH_BACKUP_PASSWORD")
		}
		if backup, err = os.ReadFile(restore); err != nil {
			fmt.Fprintf(stderr, "hsmsh serve: read backup: %v\n", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := commands.Serve(ctx, cfg, id, dir, log, backup, password, lab); err != nil {
		fmt.Fprintf(stderr, "hsmsh serve: %v\n", err)
		return 1
	}
	return 0
}
