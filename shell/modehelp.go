package shell

import (
	"fmt"
	"io"

	"github.com/hsmsh/hsmsh/bench"
)

const batchUsage = `usage: hsmsh [global flags] batch FILE|- [--keep-going] [--events]

Runs a file's commands in order in one session ("-" reads stdin). Blank
lines and # comments are skipped; a line ending in \ continues on the next.
A line that starts with "! " is a command expected to fail: the batch goes
on, and fails if that command succeeds. stdout gets one JSON envelope per
command. The batch stops at the first failure, naming FILE:LINE on stderr
(exit 1).

  --keep-going   run every line; exit 1 at the end if one failed
  --events       the cluster's events as JSON lines on stderr
`

const interactiveUsage = `usage: hsmsh [global flags] interactive [--line]

The interactive shell: full screen on a terminal; --line (or input that is
not a terminal) is the inline REPL, prompt "hsmsh > ", with line editing,
history (passwords redacted), Ctrl+R search and Tab completion on a
terminal. "hsmsh help" lists the commands it takes.
`

const configureUsage = `usage: hsmsh [global flags] configure FLAG...

Edits the config file (--config, else $HSMSH_CONFIG, else the user config
folder's hsmsh/hsmsh.toml), keeping its other lines and comments, as
CloudHSM's configure-cli does.

  --disable-key-availability-check   durability.key_availability_check = false
  --enable-key-availability-check    durability.key_availability_check = true
  --create-object-minimum-nodes N    durability.create_object_minimum_nodes = N
  -a HOST:PORT...                    the servers of a remote cluster
  --hsm-ca-cert F                    tls.customer_ca
  --client-cert-file F               tls.client_cert
  --client-key-file F                tls.client_key
`

// modeUsage is the usage of the modes that are not commands of the tree,
// for MODE --help and hsmsh help MODE.
func modeUsage(mode string) (string, bool) {
	switch mode {
	case "batch":
		return batchUsage, true
	case "interactive":
		return interactiveUsage, true
	case "configure":
		return configureUsage, true
	case "serve":
		return serveUsage + "\n", true
	case "pki":
		return pkiUsage + "\n", true
	case "demo":
		return demoUsage, true
	case "bench":
		return bench.Usage + "\n", true
	}
	return "", false
}

// wantsHelp says whether a mode's arguments ask for its usage.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "--help" || a == "-h" {
			return true
		}
	}
	return false
}

// modeHelp prints a mode's usage when args ask for it (MODE ... --help,
// or help MODE) and says whether it did.
func modeHelp(rest []string, stdout io.Writer) bool {
	if len(rest) >= 2 && rest[0] == "help" {
		if len(rest) == 3 && rest[1] == "quorum" && rest[2] == "approve" {
			fmt.Fprintln(stdout, approveUsage)
			return true
		}
		if len(rest) == 3 && rest[1] == "quorum" && rest[2] == "keygen" {
			fmt.Fprintln(stdout, keygenUsage)
			return true
		}
		if rest[1] == "pki" && (len(rest) == 2 || len(rest) == 3 && rest[2] == "init") {
			fmt.Fprint(stdout, pkiUsage+"\n")
			return true
		}
		if u, ok := modeUsage(rest[1]); ok && len(rest) == 2 {
			fmt.Fprint(stdout, u)
			return true
		}
		return false
	}
	if len(rest) == 0 || !wantsHelp(rest[1:]) {
		return false
	}
	if rest[0] == "quorum" && len(rest) > 1 && rest[1] == "approve" {
		fmt.Fprintln(stdout, approveUsage)
		return true
	}
	if rest[0] == "quorum" && len(rest) > 1 && rest[1] == "keygen" {
		fmt.Fprintln(stdout, keygenUsage)
		return true
	}
	if u, ok := modeUsage(rest[0]); ok {
		fmt.Fprint(stdout, u)
		return true
	}
	return false
}
