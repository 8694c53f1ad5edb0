package shell

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/hsmsh/hsmsh/commands"
)

const (
	approveUsage = "usage: hsmsh quorum approve --token FILE --key KEY.pem --username U"
	keygenUsage  = "usage: hsmsh quorum keygen --private-key FILE --public-key FILE"
)

// approveCommand is hsmsh quorum approve: an approver's signature added to
// a token file offline — no login, no cluster — exactly as openssl
// pkeyutl would make it, for approvers who have no openssl; and hsmsh
// quorum keygen, the key pair to sign with, as openssl genpkey makes it.
func approveCommand(args []string, stdout, stderr io.Writer) int {
	fail := func(msg string) int {
		stdout.Write(commands.Result{ErrorCode: 1, Data: msg}.JSON())
		fmt.Fprintln(stderr, "hsmsh: "+msg)
		return 1
	}
	if len(args) == 0 {
		return -1
	}
	var (
		usage string
		flags []string
	)
	switch args[0] {
	case "approve":
		usage, flags = approveUsage, []string{"token", "key", "username"}
	case "keygen":
		// quorum approve's other half, offline too: an approver's key
		// pair, as openssl genpkey would make it.
		usage, flags = keygenUsage, []string{"private-key", "public-key"}
	default:
		return -1 // not ours: the quorum token-sign commands of the tree
	}
	verb := "quorum " + args[0]
	vals := map[string]string{}
	for i := 1; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		if !strings.HasPrefix(name, "--") || !slices.Contains(flags, name[2:]) {
			return fail(fmt.Sprintf("%s: unknown flag %q; %s", verb, args[i], usage))
		}
		if !hasVal {
			if i+1 >= len(args) {
				return fail(fmt.Sprintf("%s: %s needs a value; %s", verb, name, usage))
			}
			i++
			val = args[i]
		}
		vals[strings.TrimPrefix(name, "--")] = val
	}
	for _, f := range flags {
		if vals[f] == "" {
			return fail(fmt.Sprintf("%s needs --%s; %s", verb, f, usage))
		}
	}
	var res commands.Result
	if args[0] == "approve" {
		res = commands.Approve(vals["token"], vals["key"], vals["username"])
	} else {
		res = commands.KeyGen(vals["private-key"], vals["public-key"])
	}
	stdout.Write(res.JSON())
	if !res.OK() {
		fmt.Fprintf(stderr, "hsmsh: %s: %v\n", verb, res.Data)
		return 1
	}
	return 0
}
