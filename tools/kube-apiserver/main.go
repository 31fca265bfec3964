// kube-apiserver, exactly as k8s.io/kubernetes/cmd/kube-apiserver/apiserver.go (v1.35.4) builds it.
// The test suite runs it (with etcd) to check the Helm chart with `kubectl apply --dry-run=server`
// (tests/k8s/test_k8s_apply.py). Built by scripts/bootstrap --all.
package main

import (
	"os"
	_ "time/tzdata" // for timeZone support in CronJob

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // load all the prometheus client-go plugins
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	command := app.NewAPIServerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
