// Package v20170312 is not Tencent Cloud's VPC SDK. It exists only so that flanneld v0.28.10
// compiles here: flannel's main.go imports its tencent-vpc backend unconditionally
// (pkg/backend/tencentvpc), and the module that backend needs,
// github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc, is refused by the Go module
// proxy reachable here (403 "This module version is not available"). tools/flannel/go.mod
// replaces that one module with this one; everything else in flanneld is upstream, unchanged.
//
// It declares only the names flannel's tencentvpc.go uses, with the field types it uses.
// Creating a client fails, and so does every call, with ErrUnavailable: a flanneld from this
// build that is configured with `"Backend": {"Type": "tencent-vpc"}` fails with that error
// when it acquires its lease. The lab uses the vxlan backend.
package v20170312

import "errors"

// ErrUnavailable is what every function and method here returns.
var ErrUnavailable = errors.New("the Tencent Cloud VPC backend (tencent-vpc) is not in this flanneld build: " +
	"its SDK module is not available from the Go module proxy it was built with (see kubemend's tools/flannel)")

type Client struct{}

func NewClientWithSecretId(secretId, secretKey, region string) (*Client, error) {
	return nil, ErrUnavailable
}

type Filter struct {
	Name   *string
	Values []*string
}

type Route struct {
	DestinationCidrBlock *string
	GatewayType          *string
	GatewayId            *string
	RouteId              *uint64
	RouteType            *string
	Enabled              *bool
}

type RouteTable struct {
	RouteTableId *string
	RouteSet     []*Route
}

type DescribeRouteTablesRequest struct{ Filters []*Filter }

type DescribeRouteTablesResponse struct {
	Response *struct{ RouteTableSet []*RouteTable }
}

type DeleteRoutesRequest struct {
	RouteTableId *string
	Routes       []*Route
}

type DeleteRoutesResponse struct{}

type CreateRoutesRequest struct {
	RouteTableId *string
	Routes       []*Route
}

type CreateRoutesResponse struct{}

func NewDescribeRouteTablesRequest() *DescribeRouteTablesRequest {
	return &DescribeRouteTablesRequest{}
}
func NewDeleteRoutesRequest() *DeleteRoutesRequest { return &DeleteRoutesRequest{} }
func NewCreateRoutesRequest() *CreateRoutesRequest { return &CreateRoutesRequest{} }

func (c *Client) DescribeRouteTables(*DescribeRouteTablesRequest) (*DescribeRouteTablesResponse, error) {
	return nil, ErrUnavailable
}

func (c *Client) DeleteRoutes(*DeleteRoutesRequest) (*DeleteRoutesResponse, error) {
	return nil, ErrUnavailable
}

func (c *Client) CreateRoutes(*CreateRoutesRequest) (*CreateRoutesResponse, error) {
	return nil, ErrUnavailable
}
