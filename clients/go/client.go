// Package cookline is a small Go client of a cookline stack: it submits pipeline files to
// the gateway, follows runs, and asks serve for predictions (unary or streamed).
//
//	c, err := cookline.New(cookline.Config{})            // COOKLINE_GATEWAY_ADDR / COOKLINE_SERVE_ADDR
//	                                                      // (+ COOKLINE_AUTH_TOKEN, COOKLINE_TLS_CA)
//	run, err := c.SubmitFile(ctx, "examples/iris.yaml")
//	final, err := c.Follow(ctx, run.RunId, func(e *pb.RunEvent) { ... })
//	rows, err := c.Predict(ctx, "iris", [][]float32{{5.1, 3.5, 1.4, 0.2}})
package cookline

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/proto"

	pb "cookline/client/gen/cooklinev1"
	healthpb "cookline/client/gen/healthv1"
)

// Same service config as the Python client (docs/scaling.md "Replicas and retries"): round robin
// over every address a target resolves to, and UNAVAILABLE retried with backoff.
const retryServiceConfig = `{"loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{"name": [{}], "retryPolicy": {
  "maxAttempts": 5, "initialBackoff": "0.2s", "maxBackoff": "3s", "backoffMultiplier": 2,
  "retryableStatusCodes": ["UNAVAILABLE"]}}]}`

// Config says where the services are and how to reach them. Empty fields come from the
// environment.
type Config struct {
	Gateway string // host:port of the gateway; default COOKLINE_GATEWAY_ADDR, else localhost:50050
	Serve   string // host:port of serve; default COOKLINE_SERVE_ADDR, else localhost:50054
	// AuthToken is the bearer token every call carries; default COOKLINE_AUTH_TOKEN, else the
	// contents of the file COOKLINE_AUTH_TOKEN_FILE (whitespace trimmed); none: no token.
	AuthToken string
	// TLSCA is the path of a PEM CA file: the channels use TLS and verify the servers against
	// it. Default COOKLINE_TLS_CA; none: plaintext.
	TLSCA string
}

// Client holds one channel to the gateway and one to serve.
type Client struct {
	Pipelines pb.PipelineServiceClient
	Serve     pb.ServeServiceClient
	// Datasets is CollectService's UploadDataset, GetDataset and ListDatasets, through the gateway.
	Datasets pb.CollectServiceClient
	// GatewayHealth and ServeHealth are grpc.health.v1.Health, generated from protos/grpc/health/v1.
	GatewayHealth healthpb.HealthClient
	ServeHealth   healthpb.HealthClient
	conns         []*grpc.ClientConn
}

// Row is one predicted row: the most probable class and every class's probability; for a
// detector, the image's detections instead (best first).
type Row struct {
	Label      string             `json:"label"`
	Scores     map[string]float32 `json:"scores"`
	Detections []Detection        `json:"detections,omitempty"`
}

// Detection is one box a detector found: its class, score and box (ymin, xmin, ymax, xmax as
// fractions of the image's height and width).
type Detection struct {
	Label string     `json:"label"`
	Score float32    `json:"score"`
	Box   [4]float32 `json:"box"`
}

// StreamAnswer is PredictStream's outcome for one row: a Row, or the per-row error.
type StreamAnswer struct {
	ID    string           `json:"id"`
	Row   *Row             `json:"result,omitempty"`
	Error *pb.PredictError `json:"error,omitempty"`
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// maxMessageBytes is COOKLINE_MAX_MESSAGE_MB (default 64) in bytes.
func maxMessageBytes() (int, error) {
	mb, err := strconv.Atoi(envOr("COOKLINE_MAX_MESSAGE_MB", "64"))
	if err != nil || mb < 1 || mb > 2047 {
		return 0, errors.New("COOKLINE_MAX_MESSAGE_MB must be between 1 and 2047")
	}
	return mb << 20, nil
}

// readSettingFile reads the file a setting names; the error names the setting, the path and why.
func readSettingFile(name, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			err = pathErr.Err
		}
		return nil, fmt.Errorf("%s: cannot read '%s': %v", name, path, err)
	}
	return data, nil
}

// checkToken refuses a token that cannot travel as a gRPC metadata value (printable ASCII).
func checkToken(name, token string) (string, error) {
	for _, r := range token {
		if r < 0x20 || r > 0x7e {
			return "", fmt.Errorf("%s must be printable ASCII (it is sent as gRPC metadata)", name)
		}
	}
	return token, nil
}

// authToken is the bearer token from cfg.AuthToken, else COOKLINE_AUTH_TOKEN, else the file
// named by COOKLINE_AUTH_TOKEN_FILE (whitespace trimmed); "" means no token.
func authToken(cfg Config) (string, error) {
	if cfg.AuthToken != "" {
		return checkToken("Config.AuthToken", cfg.AuthToken)
	}
	if token := os.Getenv("COOKLINE_AUTH_TOKEN"); token != "" {
		return checkToken("COOKLINE_AUTH_TOKEN", token)
	}
	path := os.Getenv("COOKLINE_AUTH_TOKEN_FILE")
	if path == "" {
		return "", nil
	}
	data, err := readSettingFile("COOKLINE_AUTH_TOKEN_FILE", path)
	if err != nil {
		return "", err
	}
	return checkToken("COOKLINE_AUTH_TOKEN_FILE", strings.TrimSpace(string(data)))
}

// transportCredentials is TLS verifying the servers against the CA in cfg.TLSCA, else in
// COOKLINE_TLS_CA; plaintext when neither is set.
func transportCredentials(cfg Config) (credentials.TransportCredentials, error) {
	name, path := "Config.TLSCA", cfg.TLSCA
	if path == "" {
		name, path = "COOKLINE_TLS_CA", strings.TrimSpace(os.Getenv("COOKLINE_TLS_CA"))
	}
	if path == "" {
		return insecure.NewCredentials(), nil
	}
	pem, err := readSettingFile(name, path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in '%s'", name, path)
	}
	return credentials.NewClientTLSFromCert(pool, ""), nil
}

// bearerToken adds "authorization: Bearer <token>" to every call, as the Python client does.
type bearerToken struct{ header map[string]string }

func (b bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return b.header, nil
}

// RequireTransportSecurity is false: the token travels over plaintext channels too (a stack
// with a token but no TLS), as the Python client's does.
func (bearerToken) RequireTransportSecurity() bool { return false }

// New connects (lazily) to the gateway and serve.
func New(cfg Config) (*Client, error) {
	limit, err := maxMessageBytes()
	if err != nil {
		return nil, err
	}
	transport, err := transportCredentials(cfg)
	if err != nil {
		return nil, err
	}
	token, err := authToken(cfg)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(transport),
		grpc.WithDefaultServiceConfig(retryServiceConfig),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limit), grpc.MaxCallSendMsgSize(limit)),
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken{map[string]string{"authorization": "Bearer " + token}}))
	}
	if cfg.Gateway == "" {
		cfg.Gateway = envOr("COOKLINE_GATEWAY_ADDR", "localhost:50050")
	}
	if cfg.Serve == "" {
		cfg.Serve = envOr("COOKLINE_SERVE_ADDR", "localhost:50054")
	}
	c := &Client{}
	for _, target := range []string{cfg.Gateway, cfg.Serve} {
		conn, err := grpc.NewClient(target, opts...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("connect to %s: %w", target, err)
		}
		c.conns = append(c.conns, conn)
	}
	c.Pipelines = pb.NewPipelineServiceClient(c.conns[0])
	c.Serve = pb.NewServeServiceClient(c.conns[1])
	c.Datasets = pb.NewCollectServiceClient(c.conns[0]) // uploads go through the gateway
	c.GatewayHealth = healthpb.NewHealthClient(c.conns[0])
	c.ServeHealth = healthpb.NewHealthClient(c.conns[1])
	return c, nil
}

// Close closes both channels.
func (c *Client) Close() {
	for _, conn := range c.conns {
		conn.Close()
	}
}

// Submit starts a run of a pipeline file's text; relative paths resolve against baseDir
// on the services' side (then the gateway's working directory).
func (c *Client) Submit(ctx context.Context, pipeline, baseDir string) (*pb.Run, error) {
	resp, err := c.Pipelines.SubmitRun(ctx, &pb.SubmitRunRequest{
		Form: &pb.SubmitRunRequest_Pipeline{Pipeline: pipeline}, BaseDir: baseDir})
	if err != nil {
		return nil, err
	}
	return resp.GetRun(), nil
}

// SubmitSpec starts a run of a pipeline built as a message, validated like a file:
//
//	c.SubmitSpec(ctx, &pb.PipelineSpec{Name: "iris", Collect: &pb.CollectSpec{Dataset: "iris"},
//		Train: &pb.TrainSpec{Model: "mlp", Epochs: 20}})
func (c *Client) SubmitSpec(ctx context.Context, spec *pb.PipelineSpec) (*pb.Run, error) {
	resp, err := c.Pipelines.SubmitRun(ctx, &pb.SubmitRunRequest{Form: &pb.SubmitRunRequest_Spec{Spec: spec}})
	if err != nil {
		return nil, err
	}
	return resp.GetRun(), nil
}

// uploadChunk is the bytes of a file per UploadDataset message (well under the 64 MiB limit).
const uploadChunk = 1 << 20

// UploadFiles lists what Upload sends for path: (name in the upload, local path) of a file, or
// of every file under a folder (hidden ones skipped), sorted by name.
func UploadFiles(path string) ([][2]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return [][2]string{{filepath.Base(path), path}}, nil
	}
	var files [][2]string
	err = filepath.WalkDir(path, func(full string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && full != path {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() {
			rel, err := filepath.Rel(path, full)
			if err != nil {
				return err
			}
			files = append(files, [2]string{filepath.ToSlash(rel), full})
		}
		return nil
	})
	return files, err // WalkDir visits in lexical order
}

// Upload streams a local file or folder as dataset name, read as source says (format and its
// options, e.g. &pb.CollectSpec{Label: "species"} for a CSV, {Format: "image-folder"}), exactly
// as collect reads the same files on its own disk. progress (may be nil) sees the bytes sent and
// the total. It returns the published version; the same files and options give the same one.
func (c *Client) Upload(ctx context.Context, path, name string, source *pb.CollectSpec,
	progress func(sent, total int64)) (*pb.DatasetInfo, error) {
	files, err := UploadFiles(path)
	if err != nil {
		return nil, err
	}
	var total, sent int64
	for _, f := range files {
		info, err := os.Stat(f[1])
		if err != nil {
			return nil, err
		}
		total += info.Size()
	}
	spec := &pb.CollectSpec{}
	if source != nil {
		spec = proto.Clone(source).(*pb.CollectSpec)
	}
	spec.Source = ""
	stream, err := c.Datasets.UploadDataset(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&pb.UploadDatasetRequest{Dataset: name, Source: spec}); err != nil {
		return nil, uploadError(stream, err)
	}
	buffer := make([]byte, uploadChunk)
	for _, f := range files {
		file, err := os.Open(f[1])
		if err != nil {
			return nil, err
		}
		for first := true; ; first = false {
			n, readErr := io.ReadFull(file, buffer)
			if n == 0 && !first {
				break
			}
			if err := stream.Send(&pb.UploadDatasetRequest{File: &pb.UploadFileChunk{Path: f[0], Data: buffer[:n]}}); err != nil {
				file.Close()
				return nil, uploadError(stream, err)
			}
			sent += int64(n)
			if progress != nil {
				progress(sent, total)
			}
			if readErr == io.EOF || readErr == io.ErrUnexpectedEOF {
				break
			}
			if readErr != nil {
				file.Close()
				return nil, readErr
			}
		}
		file.Close()
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return resp.GetDataset(), nil
}

// uploadError is the server's status when a Send failed because the server ended the call (io.EOF).
func uploadError(stream grpc.ClientStreamingClient[pb.UploadDatasetRequest, pb.UploadDatasetResponse], err error) error {
	if err == io.EOF {
		_, err = stream.CloseAndRecv()
	}
	return err
}

// GetDataset describes a stored dataset version (version "" is the newest).
func (c *Client) GetDataset(ctx context.Context, name, version string) (*pb.DatasetInfo, error) {
	resp, err := c.Datasets.GetDataset(ctx, &pb.GetDatasetRequest{Dataset: &pb.DatasetRef{Name: name, Version: version}})
	if err != nil {
		return nil, err
	}
	return resp.GetDataset(), nil
}

// Health is the grpc.health.v1 status of service ("" = the whole server) on the gateway.
func (c *Client) Health(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := c.GatewayHealth.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return resp.GetStatus(), nil
}

// SubmitFile submits a pipeline file, sending its folder as the base directory.
func (c *Client) SubmitFile(ctx context.Context, path string) (*pb.Run, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return c.Submit(ctx, string(text), filepath.Dir(abs))
}

// Watch calls fn for each of a run's events from fromSequence on, until the run ends.
// It reconnects after the last event seen when the stream breaks (UNAVAILABLE), up to 5 times.
func (c *Client) Watch(ctx context.Context, runID string, fromSequence int64, fn func(*pb.RunEvent)) error {
	next, failures := fromSequence, 0
	for {
		err := c.watchOnce(ctx, runID, &next, &failures, fn)
		if err == nil {
			return nil
		}
		failures++
		if status.Code(err) != codes.Unavailable || failures > 5 {
			return err
		}
	}
}

func (c *Client) watchOnce(ctx context.Context, runID string, next *int64, failures *int, fn func(*pb.RunEvent)) error {
	stream, err := c.Pipelines.WatchRun(ctx, &pb.WatchRunRequest{RunId: runID, FromSequence: *next})
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		*failures = 0
		*next = resp.GetEvent().GetSequence() + 1
		fn(resp.GetEvent())
	}
}

// Follow watches a run to its end and returns its final record.
func (c *Client) Follow(ctx context.Context, runID string, fn func(*pb.RunEvent)) (*pb.Run, error) {
	if err := c.Watch(ctx, runID, 0, fn); err != nil {
		return nil, err
	}
	return c.GetRun(ctx, runID)
}

// GetRun returns one run's record.
func (c *Client) GetRun(ctx context.Context, runID string) (*pb.Run, error) {
	resp, err := c.Pipelines.GetRun(ctx, &pb.GetRunRequest{RunId: runID})
	if err != nil {
		return nil, err
	}
	return resp.GetRun(), nil
}

// PredictRequest builds a request for rows of raw feature values; version 0 is the newest.
func PredictRequest(model string, version int64, rows [][]float32) (*pb.PredictRequest, error) {
	features, err := Float32Matrix(rows)
	if err != nil {
		return nil, err
	}
	return &pb.PredictRequest{Model: &pb.ModelRef{Name: model, Version: version},
		Inputs: map[string]*pb.Tensor{"features": features}}, nil
}

// RowsFromResponse decodes a PredictResponse into one Row per input row.
func RowsFromResponse(resp *pb.PredictResponse) ([]Row, error) {
	if boxes, ok := resp.GetOutputs()["boxes"]; ok {
		return detectionsFromResponse(resp, boxes)
	}
	scores, err := Float32Rows(resp.GetOutputs()["scores"])
	if err != nil {
		return nil, fmt.Errorf("outputs['scores']: %w", err)
	}
	labels, err := Strings(resp.GetOutputs()["label"])
	if err != nil {
		return nil, fmt.Errorf("outputs['label']: %w", err)
	}
	if len(labels) != len(scores) {
		return nil, fmt.Errorf("%d labels for %d rows of scores", len(labels), len(scores))
	}
	rows := make([]Row, len(scores))
	for i, s := range scores {
		rows[i] = Row{Label: labels[i], Scores: map[string]float32{}}
		for j, name := range resp.GetClassNames() {
			rows[i].Scores[name] = s[j]
		}
	}
	return rows, nil
}

// Inputs are a model's raw inputs by name, as its metadata lists them (ModelMetadata.Inputs):
// Float32Matrix for numbers, Texts for sentences, Images for image files, StringMatrix for
// category columns. Every input has the same number of rows.
type Inputs map[string]*pb.Tensor

// Predict predicts rows of numbers ("features") with one unary call.
func (c *Client) Predict(ctx context.Context, model string, rows [][]float32) ([]Row, error) {
	req, err := PredictRequest(model, 0, rows)
	if err != nil {
		return nil, err
	}
	return c.predict(ctx, req)
}

// PredictInputs predicts rows of raw inputs with one unary call, e.g.
// Inputs{"text": Texts("a great film")} or Inputs{"image": Images(png)}.
func (c *Client) PredictInputs(ctx context.Context, model string, inputs Inputs) ([]Row, error) {
	return c.predict(ctx, &pb.PredictRequest{Model: &pb.ModelRef{Name: model}, Inputs: inputs})
}

func (c *Client) predict(ctx context.Context, req *pb.PredictRequest) ([]Row, error) {
	resp, err := c.Serve.Predict(ctx, req)
	if err != nil {
		return nil, err
	}
	return RowsFromResponse(resp)
}

// PredictStream sends one PredictStream message per row and returns one answer per row,
// in order. A row that serve rejects gets an Error; the stream goes on.
func (c *Client) PredictStream(ctx context.Context, model string, rows [][]float32) ([]StreamAnswer, error) {
	return c.predictStream(ctx, len(rows), func(i int) (*pb.PredictRequest, error) {
		return PredictRequest(model, 0, [][]float32{rows[i]})
	})
}

// PredictStreamInputs is PredictStream for raw inputs: one message per element of messages
// (each usually one row, e.g. Inputs{"image": Images(png)}), one answer per message, in order.
func (c *Client) PredictStreamInputs(ctx context.Context, model string, messages []Inputs) ([]StreamAnswer, error) {
	return c.predictStream(ctx, len(messages), func(i int) (*pb.PredictRequest, error) {
		return &pb.PredictRequest{Model: &pb.ModelRef{Name: model}, Inputs: messages[i]}, nil
	})
}

func (c *Client) predictStream(ctx context.Context, count int, build func(int) (*pb.PredictRequest, error)) ([]StreamAnswer, error) {
	stream, err := c.Serve.PredictStream(ctx)
	if err != nil {
		return nil, err
	}
	sendErr := make(chan error, 1)
	go func() { // send while receiving, so neither side's flow-control window can stall the other
		for i := 0; i < count; i++ {
			req, err := build(i)
			if err == nil {
				err = stream.Send(&pb.PredictStreamRequest{CorrelationId: strconv.Itoa(i), Request: req})
			}
			if err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	var answers []StreamAnswer
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		answer := StreamAnswer{ID: resp.GetCorrelationId(), Error: resp.GetError()}
		if result := resp.GetResult(); result != nil {
			decoded, err := RowsFromResponse(result)
			if err != nil {
				return nil, err
			}
			answer.Row = &decoded[0]
		}
		answers = append(answers, answer)
	}
	return answers, <-sendErr
}

// detectionsFromResponse decodes a detector's "boxes" [rows, slots, 4], "labels" and "scores"
// [rows, slots] into one Row of Detections per image; unused slots (label "") are left out.
func detectionsFromResponse(resp *pb.PredictResponse, boxesTensor *pb.Tensor) ([]Row, error) {
	boxes, err := Float32s(boxesTensor)
	if err != nil {
		return nil, fmt.Errorf("outputs['boxes']: %w", err)
	}
	scores, err := Float32s(resp.GetOutputs()["scores"])
	if err != nil {
		return nil, fmt.Errorf("outputs['scores']: %w", err)
	}
	labels, err := Strings(resp.GetOutputs()["labels"])
	if err != nil {
		return nil, fmt.Errorf("outputs['labels']: %w", err)
	}
	shape := boxesTensor.GetShape()
	if len(shape) != 3 || len(boxes) != len(labels)*4 || len(scores) != len(labels) {
		return nil, fmt.Errorf("outputs['boxes'] %v does not fit %d labels and %d scores", shape, len(labels), len(scores))
	}
	rows, slots := int(shape[0]), int(shape[1])
	out := make([]Row, rows)
	for i := range out {
		for j := 0; j < slots; j++ {
			k := i*slots + j
			if labels[k] == "" {
				continue
			}
			d := Detection{Label: labels[k], Score: scores[k]}
			copy(d.Box[:], boxes[k*4:k*4+4])
			out[i].Detections = append(out[i].Detections, d)
		}
	}
	return out, nil
}
