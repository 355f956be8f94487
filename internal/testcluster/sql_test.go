package testcluster

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// TestScramSHA256 checks the verifier against the exchange of RFC 7677
// section 3 (user "user", password "pencil"): a server holding only the
// verifier must accept the RFC's client proof and answer with the RFC's
// server signature.
func TestScramSHA256(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v := scramSHA256("pencil", salt, 4096)
	head, keys, ok := strings.Cut(strings.TrimPrefix(v, "SCRAM-SHA-256$"), "$")
	if !ok || head != "4096:W22ZaJ0SNY7soEsUEjb6gQ==" {
		t.Fatalf("verifier %q: want SCRAM-SHA-256$4096:<salt>$<stored key>:<server key>", v)
	}
	sk, srv, _ := strings.Cut(keys, ":")
	storedKey, _ := base64.StdEncoding.DecodeString(sk)
	serverKey, _ := base64.StdEncoding.DecodeString(srv)

	const (
		clientFirstBare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
		serverFirst     = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
		clientFinalBare = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
		proof           = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
		serverSig       = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	)
	authMessage := clientFirstBare + "," + serverFirst + "," + clientFinalBare
	mac := func(key []byte) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(authMessage))
		return m.Sum(nil)
	}
	p, _ := base64.StdEncoding.DecodeString(proof)
	clientSig := mac(storedKey)
	clientKey := make([]byte, len(p))
	for i := range p {
		clientKey[i] = p[i] ^ clientSig[i]
	}
	if got := sha256.Sum256(clientKey); !hmac.Equal(got[:], storedKey) {
		t.Errorf("the RFC's client proof does not match the stored key of %q", v)
	}
	if got := base64.StdEncoding.EncodeToString(mac(serverKey)); got != serverSig {
		t.Errorf("server signature %s, want %s", got, serverSig)
	}
}
