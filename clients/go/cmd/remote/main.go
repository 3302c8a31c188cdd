// Command remote is the remote walk-through: data on this machine, the stack on another. It
// uploads a CSV and an image folder (UploadDataset, through the gateway), trains a model on
// each by dataset name with a pipeline built as a PipelineSpec message, then predicts a few
// rows of each. Progress goes to stderr; stdout gets one JSON summary line
// {"health", "datasets", "runs", "predictions"}. It exits 0 only when both runs SUCCEEDED and every
// prediction came back.
//
//	COOKLINE_GATEWAY_ADDR=host:50050 COOKLINE_SERVE_ADDR=host:50050 go run ./cmd/remote CSV LABEL IMAGE_FOLDER [PREFIX]
package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	cookline "cookline/client"
	pb "cookline/client/gen/cooklinev1"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: remote CSV LABEL_COLUMN IMAGE_FOLDER [NAME_PREFIX]")
		os.Exit(2)
	}
	prefix := "remote"
	if len(os.Args) > 4 {
		prefix = os.Args[4]
	}
	code, err := run(os.Args[1], os.Args[2], os.Args[3], prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(code)
}

type runSummary struct {
	State   string             `json:"state"`
	Reason  string             `json:"reason"`
	Dataset string             `json:"dataset"`
	Metrics map[string]float64 `json:"metrics"`
}

func run(csvFile, label, imageFolder, prefix string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	client, err := cookline.New(cookline.Config{})
	if err != nil {
		return 2, err
	}
	defer client.Close()
	health, err := client.Health(ctx, "cookline.v1.PipelineService") // the vendored grpc.health.v1
	if err != nil {
		return 2, err
	}
	if health.String() != "SERVING" {
		return 2, fmt.Errorf("gateway health: %s", health)
	}
	progress := func(what string) func(int64, int64) {
		return func(sent, total int64) { fmt.Fprintf(os.Stderr, "  uploading %s: %d/%d bytes\n", what, sent, total) }
	}
	csvData, err := client.Upload(ctx, csvFile, prefix+"-csv", &pb.CollectSpec{Label: label}, progress(csvFile))
	if err != nil {
		return 2, err
	}
	imageData, err := client.Upload(ctx, imageFolder, prefix+"-images", &pb.CollectSpec{Format: "image-folder"},
		progress(imageFolder))
	if err != nil {
		return 2, err
	}
	ref := func(d *pb.DatasetInfo) string { return d.GetRef().GetName() + "@" + d.GetRef().GetVersion() }
	datasets := map[string]string{"csv": ref(csvData), "images": ref(imageData)}
	runs := map[string]runSummary{}
	predictions := map[string][]cookline.Row{}
	for _, kind := range []string{"csv", "images"} {
		// A pipeline as a message: no YAML, no file on the services' machine.
		spec := &pb.PipelineSpec{
			Name:    prefix + "-" + kind + "-model",
			Collect: &pb.CollectSpec{Dataset: datasets[kind]},
			Process: []*pb.Op{{Kind: &pb.Op_Shuffle{Shuffle: &pb.ShuffleOp{Buffer: 1000, Seed: 7}}}},
			Train:   &pb.TrainSpec{Model: "mlp", HiddenUnits: []int64{16}, Epochs: 10, BatchSize: 16, LearningRate: 0.01},
		}
		if kind == "csv" {
			spec.Process = append([]*pb.Op{{Kind: &pb.Op_Standardize{Standardize: &pb.StandardizeOp{}}}}, spec.Process...)
			spec.Train.Epochs = 40
		}
		submitted, err := client.SubmitSpec(ctx, spec)
		if err != nil {
			return 2, err
		}
		fmt.Fprintf(os.Stderr, "run %s (%s) on %s\n", submitted.RunId, spec.Name, datasets[kind])
		final, err := client.Follow(ctx, submitted.RunId, func(e *pb.RunEvent) {
			if s := e.GetStage(); s != nil {
				fmt.Fprintf(os.Stderr, "  %s %s\n", s.Stage, s.Message)
			}
		})
		if err != nil {
			return 2, err
		}
		runs[kind] = runSummary{final.State.String(), final.Reason, ref(&pb.DatasetInfo{Ref: final.Dataset}), final.Metrics}
		if final.State != pb.RunState_RUN_STATE_SUCCEEDED {
			continue
		}
		meta, err := client.Serve.GetModelMetadata(ctx, &pb.GetModelMetadataRequest{Model: &pb.ModelRef{Name: spec.Name}})
		if err != nil {
			return 2, err
		}
		if kind == "csv" {
			rows, err := csvRows(csvFile, meta.GetMetadata().GetFeatureColumns(), 3)
			if err != nil {
				return 2, err
			}
			if predictions[kind], err = client.Predict(ctx, spec.Name, rows); err != nil {
				return 2, err
			}
			continue
		}
		files, err := firstImages(imageFolder)
		if err != nil {
			return 2, err
		}
		if meta.GetMetadata().GetInputs()["image"] != nil { // the model takes image files as they are
			predictions[kind], err = client.PredictInputs(ctx, spec.Name, cookline.Inputs{"image": cookline.Images(files...)})
		} else { // an older model takes pixel values
			var rows [][]float32
			if rows, err = pixelRows(files); err == nil {
				predictions[kind], err = client.Predict(ctx, spec.Name, rows)
			}
		}
		if err != nil {
			return 2, err
		}
	}
	out, _ := json.Marshal(map[string]any{"health": health.String(), "datasets": datasets, "runs": runs, "predictions": predictions})
	fmt.Println(string(out))
	for _, r := range runs {
		if r.State != "RUN_STATE_SUCCEEDED" {
			return 1, nil
		}
	}
	if len(predictions["csv"]) != 3 || len(predictions["images"]) == 0 {
		return 1, nil
	}
	return 0, nil
}

// csvRows reads the first count data rows of a CSV in the model's feature column order.
func csvRows(file string, columns []string, count int) ([][]float32, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	records, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, err
	}
	index := map[string]int{}
	for i, name := range records[0] {
		index[name] = i
	}
	var rows [][]float32
	for _, record := range records[1:min(count+1, len(records))] {
		row := make([]float32, len(columns))
		for j, column := range columns {
			v, err := strconv.ParseFloat(record[index[column]], 32)
			if err != nil {
				return nil, fmt.Errorf("%s: column %s: %w", file, column, err)
			}
			row[j] = float32(v)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// firstImages reads the first PNG of each class folder, as encoded bytes.
func firstImages(folder string) ([][]byte, error) {
	classes, err := os.ReadDir(folder)
	if err != nil {
		return nil, err
	}
	var files [][]byte
	for _, class := range classes {
		if !class.IsDir() || class.Name()[0] == '.' {
			continue
		}
		names, err := filepath.Glob(filepath.Join(folder, class.Name(), "*.png"))
		if err != nil || len(names) == 0 {
			return nil, fmt.Errorf("%s: no PNG in %s", folder, class.Name())
		}
		sort.Strings(names)
		data, err := os.ReadFile(names[0])
		if err != nil {
			return nil, err
		}
		files = append(files, data)
	}
	return files, nil
}

// pixelRows decodes grayscale PNG files into their values (0-255), row-major, one row per file.
func pixelRows(files [][]byte) ([][]float32, error) {
	rows := make([][]float32, 0, len(files))
	for i, data := range files {
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("image %d: %w", i, err)
		}
		b := img.Bounds()
		row := make([]float32, 0, b.Dx()*b.Dy())
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				r, _, _, _ := img.At(x, y).RGBA()
				row = append(row, float32(r>>8))
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}
