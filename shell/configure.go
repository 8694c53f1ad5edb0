package shell

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/config"
)

// configure edits the config file as CloudHSM's configure-cli does,
// keeping every other line and comment of the file.
func configure(g globals, args []string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		stdout.Write(commands.Result{ErrorCode: 1, Data: err.Error()}.JSON())
		return 1
	}
	path := g.configPath
	if path == "" {
		path = config.DefaultPath(os.Getenv)
	}
	changes := []config.Change{}
	servers := []config.Server{}
	value := func(i *int, flag string) (string, error) {
		if *i+1 >= len(args) {
			return "", fmt.Errorf("configure: %s needs a value", flag)
		}
		*i++
		return args[*i], nil
	}
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "--disable-key-availability-check":
			changes = append(changes, config.Change{Name: "durability.key_availability_check", Value: "false"})
		case "--enable-key-availability-check":
			changes = append(changes, config.Change{Name: "durability.key_availability_check", Value: "true"})
		case "--create-object-minimum-nodes":
			v, err := value(&i, a)
			if err != nil {
				return fail(err)
			}
			if _, err := strconv.Atoi(v); err != nil {
				return fail(fmt.Errorf("configure: %s takes a whole number, not %q", a, v))
			}
			changes = append(changes, config.Change{Name: "durability.create_object_minimum_nodes", Value: v})
		case "--hsm-ca-cert":
			v, err := value(&i, a)
			if err != nil {
				return fail(err)
			}
			changes = append(changes, config.Change{Name: "tls.customer_ca", Value: abs(v)})
		case "--client-cert-file", "--client-key-file":
			v, err := value(&i, a)
			if err != nil {
				return fail(err)
			}
			name := "tls.client_cert"
			if a == "--client-key-file" {
				name = "tls.client_key"
			}
			changes = append(changes, config.Change{Name: name, Value: abs(v)})
		case "-a":
			for i+1 < len(args) && len(args[i+1]) > 0 && args[i+1][0] != '-' {
				i++
				servers = append(servers, config.Server{Address: args[i]})
			}
			if len(servers) == 0 {
				return fail(fmt.Errorf("configure: -a needs at least one HOST:PORT"))
			}
		default:
			return fail(fmt.Errorf("configure: unknown flag %q; run hsmsh --help", a))
		}
	}
	if len(changes) == 0 && len(servers) == 0 {
		return fail(fmt.Errorf("configure: nothing to change; run hsmsh --help for the flags"))
	}
	for i := range servers {
		servers[i].ID = fmt.Sprintf("hsm-%d", i+1) // as EditServers names them
	}
	if len(servers) > 0 {
		if err := config.EditServers(path, servers); err != nil {
			return fail(err)
		}
	}
	if len(changes) > 0 {
		if err := config.Edit(path, changes); err != nil {
			return fail(err)
		}
	}
	stdout.Write(commands.Result{Data: map[string]any{"file": path, "changes": changes, "servers": servers}}.JSON())
	return 0
}
