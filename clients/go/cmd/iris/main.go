// Command iris submits examples/iris.yaml, follows the run's events and streams
// predictions for a few rows. Progress goes to stderr; stdout gets one JSON line per
// prediction, then a summary {"run_id", "state", "metrics", "predictions"}. It exits 0
// only when the run SUCCEEDED and every prediction came back.
//
//	COOKLINE_GATEWAY_ADDR=host:50050 COOKLINE_SERVE_ADDR=host:50054 go run ./cmd/iris [pipeline.yaml]
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	cookline "cookline/client"
	pb "cookline/client/gen/cooklinev1"
)

var rows = [][]float32{{5.1, 3.5, 1.4, 0.2}, {5.9, 3.0, 4.2, 1.5}, {6.7, 3.0, 5.2, 2.3}}

func main() {
	file := "../../examples/iris.yaml"
	if len(os.Args) > 1 {
		file = os.Args[1]
	}
	code, err := run(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(code)
}

func run(file string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	client, err := cookline.New(cookline.Config{})
	if err != nil {
		return 2, err
	}
	defer client.Close()
	submitted, err := client.SubmitFile(ctx, file)
	if err != nil {
		return 2, err
	}
	fmt.Fprintf(os.Stderr, "run %s (%s) submitted\n", submitted.RunId, submitted.Pipeline.GetName())
	final, err := client.Follow(ctx, submitted.RunId, func(e *pb.RunEvent) {
		if s := e.GetStage(); s != nil {
			fmt.Fprintf(os.Stderr, "%s finished=%v %s\n", s.Stage, s.Finished, s.Message)
		}
	})
	if err != nil {
		return 1, err
	}
	fmt.Fprintf(os.Stderr, "run %s %s %s\n", final.RunId, final.State, final.Reason)
	var predictions []cookline.Row
	if final.State == pb.RunState_RUN_STATE_SUCCEEDED {
		answers, err := client.PredictStream(ctx, final.Model.GetName(), rows)
		if err != nil {
			return 1, err
		}
		out := json.NewEncoder(os.Stdout)
		for _, a := range answers {
			out.Encode(a)
			if a.Row != nil {
				predictions = append(predictions, *a.Row)
			}
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"run_id": final.RunId, "state": final.State.String(), "metrics": final.Metrics, "predictions": predictions,
	})
	if final.State != pb.RunState_RUN_STATE_SUCCEEDED || len(predictions) != len(rows) {
		return 1, nil
	}
	return 0, nil
}
