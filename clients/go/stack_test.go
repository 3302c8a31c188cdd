package cookline

// Runs the example program and the client against a live cookline stack, found through
// COOKLINE_GATEWAY_ADDR and COOKLINE_SERVE_ADDR (tests/test_e2e_clients.py starts one and
// sets them). Without them these tests fail: a live stack is required, never skipped.

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "cookline/client/gen/cooklinev1"
)

func liveClient(t *testing.T) (*Client, context.Context) {
	t.Helper()
	for _, name := range []string{"COOKLINE_GATEWAY_ADDR", "COOKLINE_SERVE_ADDR"} {
		if os.Getenv(name) == "" {
			t.Fatalf("%s must point at a running stack", name)
		}
	}
	c, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(func() { cancel(); c.Close() })
	return c, ctx
}

func TestStack(t *testing.T) {
	c, ctx := liveClient(t)

	var summary struct {
		RunID       string             `json:"run_id"`
		State       string             `json:"state"`
		Metrics     map[string]float64 `json:"metrics"`
		Predictions []Row              `json:"predictions"`
	}
	t.Run("ExampleRunsIrisToSucceededAndStreamsPredictions", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "go", "run", "./cmd/iris")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("cmd/iris: %v\n%s", err, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &summary); err != nil {
			t.Fatal(err)
		}
		if summary.State != "RUN_STATE_SUCCEEDED" || summary.Metrics["val_accuracy"] < 0.9 {
			t.Fatalf("summary %+v", summary)
		}
		var labels []string
		for _, p := range summary.Predictions {
			labels = append(labels, p.Label)
		}
		if strings.Join(labels, ",") != "setosa,versicolor,virginica" {
			t.Fatalf("labels %v", labels)
		}
	})

	t.Run("WatchReplaysEventsInOrderFromASequenceNumber", func(t *testing.T) {
		var sequences []int64
		var last *pb.RunEvent
		err := c.Watch(ctx, summary.RunID, 5, func(e *pb.RunEvent) { sequences = append(sequences, e.Sequence); last = e })
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range sequences {
			if s != int64(5+i) {
				t.Fatalf("sequences %v", sequences)
			}
		}
		if last.GetFinished().GetState() != pb.RunState_RUN_STATE_SUCCEEDED {
			t.Fatalf("last event %v", last)
		}
	})

	t.Run("UnaryPredictDecodesProbabilities", func(t *testing.T) {
		rows, err := c.Predict(ctx, "iris", [][]float32{{5.1, 3.5, 1.4, 0.2}, {6.7, 3.0, 5.2, 2.3}})
		if err != nil {
			t.Fatal(err)
		}
		if rows[0].Label != "setosa" || rows[1].Label != "virginica" {
			t.Fatalf("rows %+v", rows)
		}
		var total float32
		for _, p := range rows[0].Scores {
			total += p
		}
		if total < 0.9999 || total > 1.0001 {
			t.Fatalf("scores sum to %v", total)
		}
	})

	t.Run("MalformedPipelineIsInvalidArgumentNamingTheField", func(t *testing.T) {
		_, err := c.Submit(ctx, "name: iris\ncollect: {source: x.csv, label: y}\ntrain: {model: mlp, epoch: 3}\n", "")
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "train.epoch") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("WrongShapedPredictionIsInvalidArgumentNamingTheInput", func(t *testing.T) {
		_, err := c.Predict(ctx, "iris", [][]float32{{5.1, 3.5, 1.4}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "inputs['features']") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("BadRowOnAStreamGetsAnErrorAndTheStreamGoesOn", func(t *testing.T) {
		answers, err := c.PredictStream(ctx, "iris", [][]float32{{5.1, 3.5, 1.4, 0.2}, {1, 2}, {6.7, 3.0, 5.2, 2.3}})
		if err != nil {
			t.Fatal(err)
		}
		if len(answers) != 3 || answers[1].Error.GetCode() != int32(codes.InvalidArgument) ||
			answers[0].Row.Label != "setosa" || answers[2].Row.Label != "virginica" {
			t.Fatalf("answers %+v", answers)
		}
	})

	t.Run("UnknownRunIsNotFound", func(t *testing.T) {
		if _, err := c.GetRun(ctx, "no-such-run"); status.Code(err) != codes.NotFound {
			t.Fatalf("got %v", err)
		}
	})
}
