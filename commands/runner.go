package commands

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/hsmcore"
	"github.com/hsmsh/hsmsh/hsmcore/host"
	"github.com/hsmsh/hsmsh/hsmcore/quorum"
	"github.com/hsmsh/hsmsh/session"
)

// Env is what commands run against: the login session, and the settings
// in force.
type Env struct {
	Session *session.Session
	Config  *config.Config
	// ReadPassword asks for a password without echo. It is nil when there
	// is no terminal to ask on; then --password is required.
	ReadPassword func(prompt string) (string, error)
	// WaitSigned, when set, waits while the user signs the token-sign MFA
	// token just written to tokenPath, and returns the signed file's path
	// ("" for the same file). The full-screen shell sets it to show the
	// file and the openssl commands; elsewhere ReadPassword asks for it.
	WaitSigned func(tokenPath string) (signedPath string, err error)
	// Dir is the folder relative file paths are read from and written to;
	// "" is the process's working folder.
	Dir string

	// set is the clusters this Env has opened, shared by its copies; Session
	// is the one this copy runs on (clusters.go). pinned marks a copy made
	// for one cluster: its views stay on it whatever use-cluster does.
	set    *clusterSet
	pinned bool
}

// Open opens the cluster the configuration describes — embedded HSMs, or
// the HSM servers of a remote cluster — and returns an Env with nobody
// logged in. dataDir is the folder under which the embedded cluster keeps
// its stores ("" for memory only); the remote mode does not use it. The
// configuration's other clusters ([[clusters]]) and the clones under
// dataDir open when a command first names them.
func Open(cfg *config.Config, dataDir string) (*Env, error) {
	c, err := openCluster(cfg, dataDir)
	if err != nil {
		return nil, err
	}
	s := session.New(c)
	set := &clusterSet{cfg: cfg, dataDir: dataDir, current: cfg.Cluster.ID,
		sessions: map[string]*session.Session{cfg.Cluster.ID: s}, opened: []string{cfg.Cluster.ID}}
	return &Env{Session: s, Config: cfg, set: set}, nil
}

// openCluster opens the cluster cfg.Cluster describes.
func openCluster(cfg *config.Config, dataDir string) (hsmcore.Cluster, error) {
	switch cfg.Cluster.Mode {
	case "remote":
		return openRemote(cfg, dataDir)
	case "embedded":
	default:
		return nil, fmt.Errorf("cluster mode %q: use \"embedded\" or \"remote\"", cfg.Cluster.Mode)
	}
	rules, client, err := clientSide(cfg, dataDir)
	if err != nil {
		return nil, err
	}
	return host.Embedded(embeddedOptions(cfg, dataDir, cfg.Cluster.ID, cfg.Cluster.HSMs, cfg.Cluster.Transport, rules, client))
}

// embeddedOptions are the options of an embedded cluster (or clone) id.
func embeddedOptions(cfg *config.Config, dataDir, id string, hsms int, transport string, rules map[string][]quorum.Rule, client hsmcore.ClientIdentity) host.Options {
	dir := ""
	if dataDir != "" {
		dir = filepath.Join(dataDir, "clusters", id)
	}
	return host.Options{
		QuorumRules:     rules,
		Client:          client,
		SessionLifetime: cfg.Session.Lifetime,
		NoRenegotiate:   !cfg.Session.Renegotiate,
		ID:              id,
		HSMs:            hsms,
		DataDir:         dir,
		Durability:      durability(cfg),
		Transport:       transport,
		Profile:         cfg.Cluster.Profile,
	}
}

// clientSide is what both modes' client library needs besides the
// cluster's shape: the quorum rule sets the HSMs apply, and this install's
// identity for authenticated sessions.
func clientSide(cfg *config.Config, dataDir string) (map[string][]quorum.Rule, hsmcore.ClientIdentity, error) {
	rules, err := quorumRules(cfg)
	if err != nil {
		return nil, hsmcore.ClientIdentity{}, err
	}
	client, err := clientIdentity(dataDir)
	return rules, client, err
}

// Close logs out of every cluster the Env opened (destroying session
// keys) and closes them.
func (e *Env) Close(ctx context.Context) error {
	if e.set == nil {
		return errors.Join(e.Session.Close(ctx), e.Session.Cluster().Close())
	}
	return e.set.close(ctx)
}

// durability maps the configuration onto the cluster's settings.
func durability(cfg *config.Config) hsmcore.Durability {
	return hsmcore.Durability{
		MinimumNodes:       cfg.Durability.CreateObjectMinimumNodes,
		AvailabilityCheck:  cfg.Durability.KeyAvailabilityCheck,
		ServerSyncInterval: cfg.Durability.ServerSyncInterval,
		RetryOnMissingKey:  cfg.Client.RetryOnMissingKey,
	}
}

func (e *Env) path(p string) string {
	if e.Dir == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(e.Dir, p)
}

// Runner runs commands.
type Runner struct {
	Env  *Env
	Tree *Tree
}

// NewRunner returns a runner with hsmsh's whole command set.
func NewRunner(env *Env) *Runner { return &Runner{Env: env, Tree: Default()} }

// RunLine splits a command line as a POSIX shell would and runs it. An
// empty line (or one holding only a comment) gives ok false.
func (r *Runner) RunLine(ctx context.Context, line string) (res Result, ok bool) {
	words, err := Split(line)
	if err != nil {
		return failure(err), true
	}
	if len(words) == 0 {
		return Result{}, false
	}
	return r.Run(ctx, words), true
}

// Run runs one command given as words.
func (r *Runner) Run(ctx context.Context, words []string) Result {
	if len(words) == 0 {
		return failure(errors.New("no command given; run help to list the commands"))
	}
	if words[0] == "quit" || words[0] == "exit" {
		return Result{Data: Message{Message: "bye"}, Quit: true}
	}
	if words[0] == "help" {
		return r.help(words[1:])
	}
	cmd, rest, err := r.Tree.Find(words)
	if err != nil {
		if res, ok := r.groupHelp(words); ok {
			return res
		}
		return failure(err)
	}
	args, err := cmd.parse(rest)
	var h errHelp
	if errors.As(err, &h) {
		return helpResult(h.cmd, slices.Contains(rest, "--json"))
	}
	if err != nil {
		return failure(err)
	}
	// The command runs on its own copy of the Env, on the cluster it
	// names or the current one, so use-cluster meanwhile changes nothing
	// under it.
	env, err := r.Env.On(args.String(clusterIDFlag.Name))
	if err != nil {
		return failure(err)
	}
	if err := cmd.allowed(env); err != nil {
		return failure(err)
	}
	if err := ctx.Err(); err != nil {
		return failure(fmt.Errorf("%s: cancelled", cmd.Name()))
	}
	ctx, err = withApproval(ctx, env, cmd, args, words)
	if err != nil {
		return failure(err)
	}
	data, err := cmd.Run(ctx, env, args)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return failure(fmt.Errorf("%s: cancelled", cmd.Name()))
		}
		return failure(err)
	}
	return success(data)
}
