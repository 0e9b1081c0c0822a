# vulcan — build and test.
#
#   make run     run a node with the defaults (embedded store in ./vulcan-data)
#   make test    everything: vet, staticcheck, unit tests with -race, each
#                benchmark once, fuzz smoke runs, and the end-to-end suite against real processes
#                and a real Apache Cassandra (started and stopped here)

GO        ?= go
CASSANDRA := test/cassandra/cassandra.sh
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(shell $(GO) env GOPATH)/bin/staticcheck)

.PHONY: build run test vet lint unit bench-smoke fuzz e2e cassandra-start cassandra-stop bench load

build:
	$(GO) build -o vulcan ./cmd/vulcan

run: build
	./vulcan agent

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

lint:
	@test -x "$(STATICCHECK)" || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) ./...

# Unit tests of every package (the end-to-end suite runs in e2e).
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '^vulcan/test$$')

# Each benchmark once, so that a benchmark broken by a change fails the
# suite instead of waiting for the next measurement.
bench-smoke:
	$(GO) test -run='^$$' -bench=. -benchtime=1x $$($(GO) list ./... | grep -v '^vulcan/test$$')

# A few seconds of each fuzz target over decoders of untrusted bytes. The
# budget is a count of executions, not a duration: Go 1.26's fuzz coordinator
# can report a spurious "context deadline exceeded" when a duration ends while
# a worker is busy (go.dev/issue/75804), and a count has no deadline to race.
FUZZ_EXECS ?= 20000
fuzz:
	@grep -rl --include='*_test.go' '^func Fuzz' . | while read f; do \
	  pkg=./$$(dirname $$f); \
	  for fn in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/func //'); do \
	    echo "fuzz $$pkg $$fn"; \
	    $(GO) test -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZ_EXECS)x $$pkg || exit 1; \
	  done; \
	done

# End-to-end tests: real vulcan processes, real upstreams, real Cassandra.
e2e:
	$(GO) test -race -count=1 -timeout 30m ./test/

test: vet lint
	$(CASSANDRA) fetch
	$(CASSANDRA) start
	@VULCAN_TEST_CASSANDRA=$$($(CASSANDRA) status) $(MAKE) --no-print-directory unit bench-smoke fuzz e2e; \
	  rc=$$?; $(CASSANDRA) stop; exit $$rc

cassandra-start:
	$(CASSANDRA) fetch
	$(CASSANDRA) start

cassandra-stop:
	$(CASSANDRA) stop

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./upstreams ./ratelimit ./node/... ./gossip

load: build
	test/load/http.sh
