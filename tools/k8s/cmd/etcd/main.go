// etcd for the lab's control plane: go.etcd.io/etcd/server/v3's own module has replace
// lines, so it is built through this wrapper instead of `go install`.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
