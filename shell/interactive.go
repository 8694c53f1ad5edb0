package shell

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/hsmsh/hsmsh/commands"
	"github.com/hsmsh/hsmsh/config"
	"github.com/hsmsh/hsmsh/themes"
)

// theme picks the theme from --theme / [ui] theme, honouring --no-color
// and NO_COLOR.
func theme(env *commands.Env, g globals) (themes.Theme, error) {
	noColor := g.noColor || os.Getenv("NO_COLOR") != ""
	return themes.Load(env.Config.UI.Theme, noColor)
}

// fullScreen runs the bubbletea shell on the alternate screen. bubbletea
// restores the terminal when the program ends, panics or gets SIGTERM.
func fullScreen(ctx context.Context, env *commands.Env, runner *commands.Runner, g globals, dataDir string, stdin io.Reader, stdout, stderr io.Writer) int {
	th, err := theme(env, g)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh: %v\n", err)
		return 1
	}
	// The shell asks for passwords in its own masked field; a terminal
	// read underneath bubbletea would fight it for the keyboard. A
	// command that asks mid-run (token-sign MFA) gets a ReadPassword of
	// its own, answered in the shell (ask.go).
	env.ReadPassword = nil
	return runProgram(ctx, NewModel(env, runner, th, dataDir), stdin, stdout, stderr)
}

// runProgram runs a shell's model on the alternate screen.
func runProgram(ctx context.Context, m *Model, stdin io.Reader, stdout, stderr io.Writer) int {
	p := tea.NewProgram(m, tea.WithAltScreen(), tea.WithMouseCellMotion(), tea.WithContext(ctx),
		tea.WithInput(stdin), tea.WithOutput(stdout))
	if _, err := p.Run(); err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "hsmsh: %v\n", err)
		return 1
	}
	return 0
}

// playDemoFullScreen plays a demo in the full-screen shell, on a fresh
// in-memory cluster of cfg's settings.
func playDemoFullScreen(g globals, cfg *config.Config, name, text string, auto time.Duration, stdin io.Reader, stdout, stderr io.Writer) int {
	noColor := g.noColor || os.Getenv("NO_COLOR") != ""
	themeName := cfg.UI.Theme
	if g.theme != "" {
		themeName = g.theme
	}
	th, err := themes.Load(themeName, noColor)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh demo: %v\n", err)
		return 1
	}
	m, closeEnv, err := newDemoModel(th, cfg, name, text, auto)
	if err != nil {
		fmt.Fprintf(stderr, "hsmsh demo: %v\n", err)
		return 1
	}
	defer func() {
		if err := closeEnv(); err != nil {
			fmt.Fprintf(stderr, "hsmsh demo: close: %v\n", err)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return runProgram(ctx, m, stdin, stdout, stderr)
}
