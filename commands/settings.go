package commands

import (
	"context"
	"fmt"
	"strings"

	"github.com/hsmsh/hsmsh/config"
)

func configCommands() []*Command {
	return []*Command{
		{
			Path: []string{"config", "show"}, Who: Anyone,
			Summary: "show the settings in force and where each came from (default, file, env, command, flag)",
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				return map[string]any{"file": env.Config.Path, "settings": env.Config.Settings()}, nil
			},
		},
		{
			Path: []string{"config", "set"}, Who: Anyone,
			Summary: "change a setting for this session, e.g. config set durability.create_object_minimum_nodes 2",
			Args:    []string{"NAME", "VALUE"},
			Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
				name, value := a.Pos[0], a.Pos[1]
				// Only the client's durability settings can change under a
				// running session; the cluster's shape, TLS files and theme
				// are read when hsmsh starts.
				if !strings.HasPrefix(name, "durability.") && !strings.HasPrefix(name, "client.") {
					if env.Config.Source(name) == "" {
						return nil, env.Config.Clone().Set(name, value, config.SourceCommand) // the unknown-name error
					}
					return nil, fmt.Errorf("%s cannot change in a running session: set it in the config file or as %s, then start hsmsh again", name, envName(name))
				}
				// Try on a copy first, so a change the cluster refuses
				// leaves the settings as they were.
				next := env.Config.Clone()
				if err := next.Set(name, value, config.SourceCommand); err != nil {
					return nil, err
				}
				if strings.HasPrefix(name, "durability.") || strings.HasPrefix(name, "client.") {
					if err := env.Session.Cluster().SetDurability(durability(next)); err != nil {
						return nil, err
					}
				}
				*env.Config = *next
				for _, s := range next.Settings() {
					if s.Name == name {
						return s, nil
					}
				}
				return map[string]string{"name": name, "value": value}, nil
			},
		},
	}
}

// envName is the environment variable that sets a setting.
func envName(name string) string {
	return "HSMSH_" + strings.ToUpper(strings.ReplaceAll(name, ".", "_"))
}
