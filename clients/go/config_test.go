package cookline

// The settings read from the environment (or Config), without a stack: the bearer token and
// its file, the TLS CA, and the errors a bad value gives.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// clearSettings blanks the token and CA variables (the secure suite sets them) for one test.
func clearSettings(t *testing.T) {
	t.Helper()
	for _, name := range []string{"COOKLINE_AUTH_TOKEN", "COOKLINE_AUTH_TOKEN_FILE", "COOKLINE_TLS_CA"} {
		t.Setenv(name, "")
	}
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// selfSignedCA is the PEM of a throw-away CA certificate.
func selfSignedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "config test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func wantError(t *testing.T, err error, pattern string) {
	t.Helper()
	if err == nil || !regexp.MustCompile(pattern).MatchString(err.Error()) {
		t.Fatalf("got error %v, want one matching %q", err, pattern)
	}
}

func TestTokenComesFromTheVariableElseTheFileTrimmed(t *testing.T) {
	clearSettings(t)
	file := writeFile(t, "token", "  from-file\n")
	for _, c := range []struct{ cfg, env, file, want string }{
		{"", "", "", ""},
		{"", "from-env", "", "from-env"},
		{"", "from-env", file, "from-env"},
		{"", "", file, "from-file"},
		{"", "", writeFile(t, "empty", "\n"), ""},
		{"from-config", "from-env", file, "from-config"},
	} {
		t.Setenv("COOKLINE_AUTH_TOKEN", c.env)
		t.Setenv("COOKLINE_AUTH_TOKEN_FILE", c.file)
		got, err := authToken(Config{AuthToken: c.cfg})
		if err != nil || got != c.want {
			t.Fatalf("%+v: got %q, %v", c, got, err)
		}
	}
}

func TestBadSettingsAreErrorsNamingThem(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := writeFile(t, "not.pem", "CERT")
	for _, c := range []struct {
		name, value string
		cfg         Config
		want        string
	}{
		{"COOKLINE_AUTH_TOKEN_FILE", missing, Config{}, `^COOKLINE_AUTH_TOKEN_FILE: cannot read '` + regexp.QuoteMeta(missing) + `': no such file or directory$`},
		{"COOKLINE_AUTH_TOKEN", "a\nb", Config{}, `^COOKLINE_AUTH_TOKEN must be printable ASCII`},
		{"COOKLINE_AUTH_TOKEN_FILE", writeFile(t, "bad-token", "a\u00e9b"), Config{}, `^COOKLINE_AUTH_TOKEN_FILE must be printable ASCII`},
		{"COOKLINE_TLS_CA", missing, Config{}, `^COOKLINE_TLS_CA: cannot read '` + regexp.QuoteMeta(missing) + `': no such file or directory$`},
		{"COOKLINE_TLS_CA", notPEM, Config{}, `^COOKLINE_TLS_CA: no PEM certificate in '` + regexp.QuoteMeta(notPEM) + `'$`},
		{"COOKLINE_TLS_CA", "", Config{TLSCA: missing}, `^Config.TLSCA: cannot read '` + regexp.QuoteMeta(missing) + `': no such file or directory$`},
		{"COOKLINE_AUTH_TOKEN", "", Config{AuthToken: "a\tb"}, `^Config.AuthToken must be printable ASCII`},
	} {
		clearSettings(t)
		t.Setenv(c.name, c.value)
		c.cfg.Gateway, c.cfg.Serve = "localhost:1", "localhost:2"
		client, err := New(c.cfg)
		if err == nil {
			client.Close()
		}
		wantError(t, err, c.want)
	}
}

func TestGoodSettingsMakeAClient(t *testing.T) {
	ca := writeFile(t, "ca.pem", selfSignedCA(t))
	for _, c := range []struct {
		env map[string]string
		cfg Config
	}{
		{map[string]string{"COOKLINE_TLS_CA": "  " + ca + "\n"}, Config{}},                                // TLS from the environment
		{map[string]string{"COOKLINE_TLS_CA": "  "}, Config{}},                                            // blank: plaintext
		{map[string]string{"COOKLINE_AUTH_TOKEN": "t"}, Config{}},                                         // a token over plaintext is allowed
		{map[string]string{"COOKLINE_TLS_CA": filepath.Join(ca, "x")}, Config{TLSCA: ca, AuthToken: "t"}}, // Config wins over a bad variable
	} {
		clearSettings(t)
		for name, value := range c.env {
			t.Setenv(name, value)
		}
		c.cfg.Gateway, c.cfg.Serve = "localhost:1", "localhost:2"
		client, err := New(c.cfg)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		client.Close()
	}
}
