// Command oidc-provider is the OpenID Provider Tower's single sign-on tests log in against: the example OP
// of github.com/zitadel/oidc (login form, authorization code with PKCE, refresh tokens, device flow) with
// users and groups from a JSON file, a groups claim in ID tokens, native (loopback) clients, a chosen ID
// token lifetime, and signing-key rotation on request. It is a test tool, built into the per-machine
// cache by tests/cluster/build.sh; it is never part of Tower.
//
//	oidc-provider -listen 127.0.0.1:0 -users users.json -client tower [-client other] [-issuer URL]
//	              [-id-token-ttl 1h] [-tls-cert F -tls-key F]
//
// It prints one JSON line {"msg":"listening","issuer":...} once it serves. POST /admin/rotate-key makes a
// new signing key (the old one stays published); POST /admin/rotate-key?retire=1 also stops publishing
// every older key.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

type fileUser struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	Email    string   `json:"email"`
	Groups   []string `json:"groups"`
}

type userStore struct {
	users  map[string]*storage.User
	groups map[string][]string
}

func (u *userStore) GetUserByID(id string) *storage.User { return u.users[id] }
func (u *userStore) GetUserByUsername(name string) *storage.User {
	for _, user := range u.users {
		if user.Username == name {
			return user
		}
	}
	return nil
}
func (u *userStore) ExampleClientID() string { return "service" }

// key is one RSA signing key; it implements both op.SigningKey and op.Key.
type key struct {
	id  string
	key *rsa.PrivateKey
}

func (k *key) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *key) Algorithm() jose.SignatureAlgorithm          { return jose.RS256 }
func (k *key) ID() string                                  { return k.id }
func (k *key) Use() string                                 { return "sig" }

type signing struct{ *key }

func (s signing) Key() any { return s.key.key }

type public struct{ *key }

func (p public) Key() any { return &p.key.key.PublicKey }

func newKey() *key {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return &key{id: uuid.NewString(), key: k}
}

// client is a public native client: PKCE, loopback redirects on any port, refresh tokens, device flow.
type client struct {
	id  string
	ttl time.Duration
}

func (c *client) GetID() string { return c.id }
func (c *client) RedirectURIs() []string {
	return []string{"http://127.0.0.1/callback", "http://localhost/callback"}
}
func (c *client) PostLogoutRedirectURIs() []string    { return nil }
func (c *client) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
func (c *client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodNone }
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) LoginURL(id string) string            { return "/login/username?authRequestID=" + id }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration       { return c.ttl }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(scope string) bool     { return scope == "groups" }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken, oidc.GrantTypeDeviceCode}
}

// provider is the example storage with its own clients, signing keys and a groups claim.
type provider struct {
	*storage.Storage
	users   *userStore
	clients map[string]*client
	mu      sync.Mutex
	current *key
	publish []*key
}

func (p *provider) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	if c, ok := p.clients[id]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("client not found")
}

func (p *provider) SigningKey(context.Context) (op.SigningKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return signing{p.current}, nil
}

func (p *provider) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (p *provider) KeySet(context.Context) ([]op.Key, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]op.Key, 0, len(p.publish))
	for _, k := range p.publish {
		keys = append(keys, public{k})
	}
	return keys, nil
}

func (p *provider) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := p.Storage.SetUserinfoFromRequest(ctx, info, req, scopes); err != nil {
		return err
	}
	if groups, ok := p.users.groups[req.GetSubject()]; ok {
		info.AppendClaims("groups", groups)
	}
	return nil
}

func (p *provider) rotate(retire bool) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.current = newKey()
	if retire {
		p.publish = nil
	}
	p.publish = append(p.publish, p.current)
	return p.current.id
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	issuerFlag := flag.String("issuer", "", "issuer URL (default http://LISTEN-ADDRESS)")
	usersFile := flag.String("users", "", "JSON list of {username, password, email, groups}")
	ttl := flag.Duration("id-token-ttl", time.Hour, "lifetime of ID tokens")
	certFile := flag.String("tls-cert", "", "serve HTTPS with this certificate (PEM)")
	keyFile := flag.String("tls-key", "", "and this key (PEM)")
	var clientIDs listFlag
	flag.Var(&clientIDs, "client", "client ID of a public native client (repeatable)")
	flag.Parse()

	raw, err := os.ReadFile(*usersFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "oidc-provider: -users:", err)
		os.Exit(2)
	}
	var list []fileUser
	if err := json.Unmarshal(raw, &list); err != nil {
		fmt.Fprintln(os.Stderr, "oidc-provider: -users:", err)
		os.Exit(2)
	}
	users := &userStore{users: map[string]*storage.User{}, groups: map[string][]string{}}
	for _, u := range list {
		// The user name is the user's ID (the subject): the example storage's device flow completes
		// with the user name as the subject and looks the user up by ID.
		id := u.Username
		users.users[id] = &storage.User{
			ID: id, Username: u.Username, Password: u.Password, FirstName: u.Username, LastName: "",
			Email: u.Email, EmailVerified: true, PreferredLanguage: language.English,
		}
		users.groups[id] = u.Groups
	}
	clients := map[string]*client{}
	known := map[string]*storage.Client{} // the example storage checks device-flow clients here
	for _, id := range clientIDs {
		clients[id] = &client{id: id, ttl: *ttl}
		known[id] = storage.DeviceClient(id, "")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "oidc-provider:", err)
		os.Exit(1)
	}
	issuer := *issuerFlag
	if issuer == "" {
		scheme := "http"
		if *certFile != "" {
			scheme = "https"
		}
		issuer = scheme + "://" + ln.Addr().String()
	}
	p := &provider{Storage: storage.NewStorageWithClients(users, known), users: users, clients: clients}
	p.rotate(false)
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	router := exampleop.SetupServer(issuer, p, logger, false)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/rotate-key", func(w http.ResponseWriter, r *http.Request) {
		kid := p.rotate(r.URL.Query().Get("retire") == "1")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"kid": kid})
	})
	mux.Handle("/", router)
	line, _ := json.Marshal(map[string]string{"msg": "listening", "issuer": issuer, "address": ln.Addr().String()})
	fmt.Println(string(line))
	if *certFile != "" {
		err = http.ServeTLS(ln, mux, *certFile, *keyFile)
	} else {
		err = http.Serve(ln, mux)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "oidc-provider:", err)
		os.Exit(1)
	}
}
