//go:build tools

// The package controller-gen reads; imported so that go mod tidy keeps its module.
package crds

import _ "github.com/kubewarden/kubewarden-controller/api/policies/v1"
