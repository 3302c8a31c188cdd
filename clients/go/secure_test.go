package cookline

// The bearer token and TLS against a live stack (tests/test_e2e_clients_secure.py starts one
// that demands COOKLINE_AUTH_TOKEN and speaks only TLS, and sets both for this process, plus
// COOKLINE_TEST_OTHER_CA: a CA that did not sign the servers' certificates). The subtests
// that need a token or TLS run only when the stack has them; that Python test asserts each
// of them ran and passed. Against a plaintext stack without a token
// (tests/test_e2e_clients.py) a client carrying a token must still work.

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// bothCallsAre checks one call to the gateway and one to serve; a call that passes the
// transport and auth is NOT_FOUND (no such run, no such model).
func bothCallsAre(t *testing.T, cfg Config, want codes.Code) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.GetRun(ctx, "no-such-run"); status.Code(err) != want {
		t.Fatalf("GetRun: got %v, want %v", err, want)
	}
	if _, err := c.Predict(ctx, "no-such-model", [][]float32{{1, 2, 3, 4}}); status.Code(err) != want {
		t.Fatalf("Predict: got %v, want %v", err, want)
	}
}

func TestSecureStack(t *testing.T) {
	liveClient(t) // the addresses must be set
	token, err := authToken(Config{})
	if err != nil {
		t.Fatal(err)
	}
	caFile := os.Getenv("COOKLINE_TLS_CA")

	t.Run("SettingsFromTheEnvironmentPass", func(t *testing.T) {
		bothCallsAre(t, Config{}, codes.NotFound)
	})

	t.Run("TheSameSettingsInConfigPassWithNoOtherEnvironment", func(t *testing.T) {
		cfg := Config{Gateway: os.Getenv("COOKLINE_GATEWAY_ADDR"), Serve: os.Getenv("COOKLINE_SERVE_ADDR"),
			AuthToken: token, TLSCA: caFile}
		clearSettings(t)
		bothCallsAre(t, cfg, codes.NotFound)
	})

	if token == "" {
		t.Run("ATokenWorksAgainstAStackThatDemandsNone", func(t *testing.T) {
			bothCallsAre(t, Config{AuthToken: "unneeded-token"}, codes.NotFound)
		})
	}

	if token != "" {
		t.Run("WrongTokenIsUnauthenticated", func(t *testing.T) {
			bothCallsAre(t, Config{AuthToken: "wrong-" + token}, codes.Unauthenticated)
		})

		t.Run("NoTokenIsUnauthenticated", func(t *testing.T) {
			t.Setenv("COOKLINE_AUTH_TOKEN", "")
			t.Setenv("COOKLINE_AUTH_TOKEN_FILE", "")
			bothCallsAre(t, Config{}, codes.Unauthenticated)
		})

		t.Run("TokenFromTheFilePasses", func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Setenv("COOKLINE_AUTH_TOKEN", "")
			t.Setenv("COOKLINE_AUTH_TOKEN_FILE", file)
			bothCallsAre(t, Config{}, codes.NotFound)
		})
	}

	if caFile != "" {
		t.Run("WithoutTheCAPlaintextCannotConnect", func(t *testing.T) {
			t.Setenv("COOKLINE_TLS_CA", "")
			bothCallsAre(t, Config{}, codes.Unavailable)
		})

		t.Run("TrustingAnotherCACannotConnect", func(t *testing.T) {
			other := os.Getenv("COOKLINE_TEST_OTHER_CA")
			if other == "" {
				t.Fatal("COOKLINE_TEST_OTHER_CA must name a CA that did not sign the servers")
			}
			bothCallsAre(t, Config{TLSCA: other}, codes.Unavailable)
		})
	}
}
