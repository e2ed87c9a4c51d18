// Stands in for github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc, which the Go
// module proxy reachable here refuses (403 "This module version is not available" for
// v1.3.188, the version flannel v0.28.10 pins). See v20170312/unavailable.go.
module github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc

go 1.21
