//go:build deps

// Package main pins the module graph while packages are still being written.
package main
import (
 _ "github.com/hashicorp/memberlist"
 _ "github.com/gocql/gocql"
 _ "go.etcd.io/bbolt"
 _ "github.com/hashicorp/go-hclog"
 _ "github.com/hashicorp/hcl/v2/hclsimple"
 _ "github.com/emersion/go-smtp"
 _ "github.com/emersion/go-sasl"
 _ "golang.org/x/sync/singleflight"
 _ "github.com/google/uuid"
 _ "github.com/gorilla/websocket"
 _ "github.com/prometheus/client_golang/prometheus"
)
func main(){}
