# Other-language clients and the tools their tests drive (included by the Makefile).
# Go binaries go into .cache/go-bin (gitignored) and are reused when present.
GO         ?= go
GO_BIN     := $(CURDIR)/.cache/go-bin
GO_TOOLS   := protoc-gen-go protoc-gen-go-grpc grpcurl ghz kubeconform kustomize buf
# Pinned versions of the `go install`ed tools.
GO_TOOL_protoc-gen-go      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GO_TOOL_protoc-gen-go-grpc := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
GO_TOOL_grpcurl            := github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
# ghz, the gRPC load tester: its test drives serve and the gateway through reflection.
GO_TOOL_ghz                := github.com/bojand/ghz/cmd/ghz@v0.121.0
GO_TOOL_kubeconform        := github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
GO_TOOL_kustomize          := sigs.k8s.io/kustomize/kustomize/v5@v5.8.2
GO_TOOL_buf                := github.com/bufbuild/buf/cmd/buf@v1.61.0
GO_GEN     := clients/go/gen/cooklinev1
# The vendored standard health service, generated for Go beside cookline.v1 (Node.js loads it at
# run time; Python uses grpcio-health-checking's stubs of the same file).
HEALTH_PROTO := protos/grpc/health/v1/health.proto
# Map each proto file to the Go package of the generated code (the cookline protos carry no go_package).
GO_MOPTS   := $(foreach p,$(PROTOS),--go_opt=M$(p:protos/%=%)=cookline/client/gen/cooklinev1 \
                --go-grpc_opt=M$(p:protos/%=%)=cookline/client/gen/cooklinev1) \
              --go_opt=M$(HEALTH_PROTO:protos/%=%)=cookline/client/gen/healthv1 \
              --go-grpc_opt=M$(HEALTH_PROTO:protos/%=%)=cookline/client/gen/healthv1
K8S_VERSION := 1.33.0
K8S_SCHEMAS := .cache/k8s-schemas/v$(K8S_VERSION)-local-strict

.PHONY: tools go-gen node-deps browser

# Everything the client, grpcurl, kubeconform and compose tests need besides the venv
# (the compose test builds the images itself, through `make compose-up`).
tools: install deploy-tools browser node-deps go-gen $(addprefix $(GO_BIN)/,$(GO_TOOLS)) $(K8S_SCHEMAS)/.extracted

# Debian's chromium, the browser the dashboard test drives through Playwright (Playwright's own
# browser download is not used; CI runs as root on a fresh machine).
browser:
	@command -v chromium >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# Reinstalled when this file (and so a pinned version) changes.
$(GO_BIN)/%: clients/clients.mk
	GOBIN=$(GO_BIN) $(GO) install $(GO_TOOL_$*) && touch $@

# Node.js dependencies, exactly as pinned in package-lock.json.
node-deps: clients/node/node_modules/.installed
clients/node/node_modules/.installed: clients/node/package.json clients/node/package-lock.json
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Go stubs generated from protos/ (gitignored; never edited by hand).
go-gen: $(GO_GEN)/.generated
$(GO_GEN)/.generated: $(PROTOS) $(HEALTH_PROTO) $(VENV)/.installed $(GO_BIN)/protoc-gen-go $(GO_BIN)/protoc-gen-go-grpc
	rm -rf $(GO_GEN) clients/go/gen/healthv1 && mkdir -p $(GO_GEN)
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
	  --plugin=protoc-gen-go=$(GO_BIN)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(GO_BIN)/protoc-gen-go-grpc \
	  --go_out=clients/go/gen --go_opt=module=cookline/client/gen \
	  --go-grpc_out=clients/go/gen --go-grpc_opt=module=cookline/client/gen $(GO_MOPTS) $(PROTOS) $(HEALTH_PROTO)
	touch $@

# Kubernetes JSON schemas for kubeconform, from the kubernetes-validate wheel (PyPI, the
# `test` extra): no schema is fetched at test time. Their "$ref"s point at
# /api/_definitions.json under a kubernetes.io $id, so they are rewritten to file URLs.
$(K8S_SCHEMAS)/.extracted: $(VENV)/.installed
	rm -rf $(K8S_SCHEMAS) && mkdir -p $(dir $(K8S_SCHEMAS))
	cp -r "$$($(BIN)/python -c 'import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))')/kubernetes-json-schema/$(notdir $(K8S_SCHEMAS))" $(K8S_SCHEMAS)
	sed -i 's|"/api/_definitions.json#|"file://$(CURDIR)/$(K8S_SCHEMAS)/_definitions.json#|g' $(K8S_SCHEMAS)/*.json
	touch $@
