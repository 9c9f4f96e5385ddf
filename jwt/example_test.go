package jwt_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/jwt"
)

func ExampleVerifier_Verify() {
	ctx := context.Background()
	secret := []byte("example secret, at least 32 bytes long")
	v, err := jwt.New(ctx, jwt.Config{HMACSecret: secret, Issuer: "my-backend", Leeway: jwt.DefaultLeeway})
	if err != nil {
		panic(err)
	}
	defer v.Close()

	// What the application's backend would mint.
	token, err := gojwt.NewWithClaims(gojwt.SigningMethodHS256, gojwt.MapClaims{
		"sub":   "alice",
		"iss":   "my-backend",
		"scope": "chat:read chat:write",
		"exp":   time.Now().Add(time.Hour).Unix(),
	}).SignedString(secret)
	if err != nil {
		panic(err)
	}

	p, err := v.Verify(ctx, token)
	if err != nil {
		panic(err)
	}
	fmt.Println(p.Method, p.UserID, p.Scopes, p.HasScope("chat:write"))

	_, err = v.Verify(ctx, token[:len(token)-4]+"AAAA")
	fmt.Println(errors.Is(err, sessionbridge.ErrInvalidToken), errors.Is(err, jwt.ErrBadSignature))
	// Output:
	// jwt alice [chat:read chat:write] true
	// true true
}
