package shell

import (
	"fmt"
	"io"
	"strings"

	"github.com/hsmsh/hsmsh/commands"
)

const pkiUsage = "usage: hsmsh pki init --dir DIR [--key-type " + "ecdsa-p256|ecdsa-p384|rsa-2048|rsa-3072] [--cluster-id ID] [--host NAME...]"

// pkiCommand is hsmsh pki init: the certificates of the nested TLS.
func pkiCommand(args []string, stdout, stderr io.Writer) int {
	fail := func(msg string) int {
		stdout.Write(commands.Result{ErrorCode: 1, Data: msg}.JSON())
		return 1
	}
	if len(args) == 0 || args[0] != "init" {
		return fail("pki takes one subcommand, init; " + pkiUsage)
	}
	var dir, keyType, clusterID string
	var hosts []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		val := func() (string, bool) {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				return "", false
			}
			i++
			return args[i], true
		}
		var ok bool
		switch a {
		case "--dir":
			dir, ok = val()
		case "--key-type":
			keyType, ok = val()
		case "--cluster-id":
			clusterID, ok = val()
		case "--host":
			var h string
			for h, ok = val(); ok; h, ok = val() {
				hosts = append(hosts, h)
			}
			ok = len(hosts) > 0
		default:
			return fail(fmt.Sprintf("pki init: unknown flag %q; %s", a, pkiUsage))
		}
		if !ok {
			return fail(fmt.Sprintf("pki init: %s needs a value; %s", a, pkiUsage))
		}
	}
	if dir == "" {
		return fail("pki init needs --dir; " + pkiUsage)
	}
	res := commands.InitPKI(dir, keyType, clusterID, hosts)
	stdout.Write(res.JSON())
	if !res.OK() {
		return 1
	}
	return 0
}
