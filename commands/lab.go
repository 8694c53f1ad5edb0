package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hsmsh/hsmsh/hsmcore"
)

// Event is something that happened in the cluster, for live views and
// batch mode's --events.
type Event = hsmcore.Event

// Subscribe follows the cluster's events; cancel ends it.
func (e *Env) Subscribe(buffer int) (<-chan Event, func()) {
	return e.Session.Cluster().Subscribe(buffer)
}

func lab(env *Env) (hsmcore.Lab, error) {
	l, ok := env.Session.Cluster().(hsmcore.Lab)
	if !ok {
		return nil, errors.New("the lab works on the embedded cluster only: to fail a remote HSM, stop its server process")
	}
	return l, nil
}

var hsmFlag = Flag{Name: "hsm", Kind: String, Required: true, Help: "the HSM, e.g. hsm-2"}

// labCommand makes a lab command that needs only the lab.
func labCommand(path []string, summary string, flags []Flag, run func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error)) *Command {
	return &Command{
		Path: append([]string{"lab"}, path...), Who: Anyone, Summary: summary, Flags: flags,
		Run: func(ctx context.Context, env *Env, a *Args) (any, error) {
			l, err := lab(env)
			if err != nil {
				return nil, err
			}
			return run(ctx, l, a)
		},
	}
}

func labCommands() []*Command {
	hsmResult := func(id, state string) map[string]string { return map[string]string{"hsm": id, "state": state} }
	return []*Command{
		labCommand([]string{"hsm", "fail"}, "make an HSM stop answering; --destroy also erases its keys for good",
			[]Flag{hsmFlag, {Name: "destroy", Kind: Bool, Help: "erase the HSM's store, as when the hardware is lost"}},
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				if err := l.FailHSM(a.String("hsm"), a.Bool("destroy")); err != nil {
					return nil, err
				}
				state := "down"
				if a.Bool("destroy") {
					state = "down (destroyed: its keys are gone)"
				}
				return hsmResult(a.String("hsm"), state), nil
			}),
		labCommand([]string{"hsm", "recover"}, "make a failed HSM answer again (empty after --destroy: server-side sync refills it)",
			[]Flag{{Name: "hsm", Kind: String, Help: "the HSM, e.g. hsm-2; may be left out while only one HSM is down"}},
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				id := a.String("hsm")
				if id == "" {
					var err error
					if id, err = onlyDown(ctx, l); err != nil {
						return nil, err
					}
				}
				if err := l.RecoverHSM(id); err != nil {
					return nil, err
				}
				return hsmResult(id, "active"), nil
			}),
		labCommand([]string{"hsm", "restart"}, "restart an HSM: its volatile memory (session keys) is wiped, token keys stay",
			[]Flag{hsmFlag},
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				if err := l.RestartHSM(a.String("hsm")); err != nil {
					return nil, err
				}
				return hsmResult(a.String("hsm"), "active"), nil
			}),
		labCommand([]string{"hsm", "add"}, "add an empty HSM to the cluster (server-side sync fills it)", nil,
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				id, err := l.AddHSM()
				if err != nil {
					return nil, err
				}
				return hsmResult(id, "active"), nil
			}),
		labCommand([]string{"hsm", "remove"}, "remove an HSM from the cluster, erasing its store", []Flag{hsmFlag},
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				if err := l.RemoveHSM(a.String("hsm")); err != nil {
					return nil, err
				}
				return hsmResult(a.String("hsm"), "removed"), nil
			}),
		labCommand([]string{"sync", "pause"}, "pause server-side sync: keys stay where client-side sync put them", nil,
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				if err := l.PauseSync(); err != nil {
					return nil, err
				}
				return syncStatus(l), nil
			}),
		labCommand([]string{"sync", "resume"}, "resume server-side sync", nil,
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				if err := l.ResumeSync(); err != nil {
					return nil, err
				}
				return syncStatus(l), nil
			}),
		labCommand([]string{"sync", "now"}, "run one server-side sync pass now (works while paused too)", nil,
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				st, err := l.SyncNow(ctx)
				if err != nil {
					return nil, err
				}
				return map[string]any{"sync": st}, nil
			}),
		labCommand([]string{"sync", "status"}, "show whether server-side sync is paused, when it runs next and what it last did", nil,
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				return syncStatus(l), nil
			}),
		labCommand([]string{"latency"}, "slow every operation on one HSM down by N milliseconds (0 to stop)",
			[]Flag{hsmFlag, {Name: "ms", Kind: Int, Required: true, Help: "milliseconds, 0 to 10000"}},
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				if err := l.SetLatency(a.String("hsm"), time.Duration(a.Int("ms"))*time.Millisecond); err != nil {
					return nil, err
				}
				return map[string]any{"hsm": a.String("hsm"), "latency-ms": a.Int("ms")}, nil
			}),
		labCommand([]string{"hsm", "partition"}, "cut an HSM off from the other HSMs (clients still reach it), or join it back with --heal",
			[]Flag{hsmFlag, {Name: "heal", Kind: Bool, Help: "join it back to its peers"}},
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				if err := l.PartitionHSM(a.String("hsm"), !a.Bool("heal")); err != nil {
					return nil, err
				}
				state := "cut off from its peers"
				if a.Bool("heal") {
					state = "joined back to its peers"
				}
				return hsmResult(a.String("hsm"), state), nil
			}),
		labCommand([]string{"cleanup", "fail-next"}, "make the next cleanup of a failed client-side sync fail, leaving key material to delete by hand", nil,
			func(ctx context.Context, l hsmcore.Lab, a *Args) (any, error) {
				l.FailNextCleanup()
				return "The next cleanup of a failed key creation will fail", nil
			}),
	}
}

func syncStatus(l hsmcore.Lab) map[string]any {
	st := l.SyncStatus()
	out := map[string]any{"paused": st.Paused, "interval": st.Interval.String(), "last": st.Last}
	if !st.Next.IsZero() {
		out["next-in"] = fmt.Sprintf("%.1fs", time.Until(st.Next).Seconds())
	}
	return out
}

// onlyDown names the one HSM that is down (or destroyed), for lab hsm
// recover without --hsm; with none or several down it says which to give.
func onlyDown(ctx context.Context, l hsmcore.Lab) (string, error) {
	c, ok := l.(interface {
		HSMs(context.Context) []hsmcore.HSMInfo
	})
	if !ok {
		return "", errors.New("lab hsm recover: give --hsm")
	}
	var down, all []string
	for _, h := range c.HSMs(ctx) {
		all = append(all, h.ID)
		if h.State != hsmcore.StateActive {
			down = append(down, h.ID)
		}
	}
	switch len(down) {
	case 0:
		return "", fmt.Errorf("no HSM is down (HSMs: %s)", strings.Join(all, ", "))
	case 1:
		return down[0], nil
	}
	return "", fmt.Errorf("%d HSMs are down (%s): give --hsm with the one to recover", len(down), strings.Join(down, ", "))
}
