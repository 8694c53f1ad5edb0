package commands

import (
	"context"
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
