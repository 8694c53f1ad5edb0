package shell

import (
	"fmt"
	"io"
	"strings"

	"github.com/hsmsh/hsmsh/commands"
)

const approveUsage = "usage: hsmsh quorum approve --token FILE --key KEY.pem --username U"

// approveCommand is hsmsh quorum approve: an approver's signature added to
// a token file offline — no login, no cluster — exactly as openssl
// pkeyutl would make it, for approvers who have no openssl.
func approveCommand(args []string, stdout, stderr io.Writer) int {
	fail := func(msg string) int {
		stdout.Write(commands.Result{ErrorCode: 1, Data: msg}.JSON())
		fmt.Fprintln(stderr, "hsmsh: "+msg)
		return 1
	}
	if len(args) == 0 || args[0] != "approve" {
		return -1 // not ours: the quorum token-sign commands of the tree
	}
	vals := map[string]string{}
	for i := 1; i < len(args); i++ {
		name, val, hasVal := strings.Cut(args[i], "=")
		switch name {
		case "--token", "--key", "--username":
		default:
			return fail(fmt.Sprintf("quorum approve: unknown flag %q; %s", args[i], approveUsage))
		}
		if !hasVal {
			if i+1 >= len(args) {
				return fail(fmt.Sprintf("quorum approve: %s needs a value; %s", name, approveUsage))
			}
			i++
			val = args[i]
		}
		vals[strings.TrimPrefix(name, "--")] = val
	}
	for _, f := range []string{"token", "key", "username"} {
		if vals[f] == "" {
			return fail(fmt.Sprintf("quorum approve needs --%s; %s", f, approveUsage))
		}
	}
	res := commands.Approve(vals["token"], vals["key"], vals["username"])
	stdout.Write(res.JSON())
	if !res.OK() {
		fmt.Fprintln(stderr, "hsmsh: quorum approve:", res.Data)
		return 1
	}
	return 0
}
