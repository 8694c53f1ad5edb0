package commands

import (
	"context"
	"sync"
	"testing"

	"github.com/hsmsh/hsmsh/config"
)

// Copies made with WithOwnSession log in and out on their own, at the same
// time, and leave the shell's login alone.
func TestWithOwnSession(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	if err := cfg.Set("cluster.transport", "direct", config.SourceFlag); err != nil {
		t.Fatal(err)
	}
	env, err := Open(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close(ctx)
	r := NewRunner(env)
	for _, line := range []string{
		"cluster activate --password adminpass1",
		"login --username admin --role admin --password adminpass1",
		"user create --username cu1 --role crypto-user --password cu1pass12",
	} {
		if res, _ := r.RunLine(ctx, line); !res.OK() {
			t.Fatalf("%s: %v", line, res.Data)
		}
	}

	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own, release := env.WithOwnSession()
			defer release(ctx)
			wr := NewRunner(own)
			for range 3 {
				if res := wr.Run(ctx, []string{"login", "--username", "cu1", "--role", "crypto-user", "--password", "cu1pass12"}); !res.OK() {
					errs <- "login: " + res.Data.(string)
					return
				}
				if u, _, ok := own.Who(); !ok || u != "cu1" {
					errs <- "the copy's login is not cu1: " + u
				}
				if res := wr.Run(ctx, []string{"logout"}); !res.OK() {
					errs <- "logout: " + res.Data.(string)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if u, _, ok := env.Who(); !ok || u != "admin" {
		t.Errorf("the shell's login is %q (logged in %v); want admin, untouched", u, ok)
	}

	// A copy left logged in is logged out by its release function.
	own, release := env.WithOwnSession()
	if res := NewRunner(own).Run(ctx, []string{"login", "--username", "cu1", "--role", "crypto-user", "--password", "cu1pass12"}); !res.OK() {
		t.Fatal(res.Data)
	}
	if err := release(ctx); err != nil {
		t.Fatal(err)
	}
	if own.Session.LoggedIn() {
		t.Error("release left the copy logged in")
	}
}
