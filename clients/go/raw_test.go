package cookline

// Raw inputs against a live serve: the example classifies a sentence and an image file,
// and the client sends strings and []byte. tests/e2e/test_clients.py deploys a text model
// and an image model and names them in COOKLINE_RAW_TEXT_MODEL / COOKLINE_RAW_IMAGE_MODEL,
// with a bright PNG in COOKLINE_RAW_IMAGE_FILE. Without them this fails: never skipped.

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	pb "cookline/client/gen/cooklinev1"
)

func TestRawInputs(t *testing.T) {
	env := map[string]string{}
	for _, name := range []string{"COOKLINE_RAW_TEXT_MODEL", "COOKLINE_RAW_IMAGE_MODEL", "COOKLINE_RAW_IMAGE_FILE"} {
		if env[name] = os.Getenv(name); env[name] == "" {
			t.Fatalf("%s must be set (tests/e2e/test_clients.py sets it)", name)
		}
	}
	c, ctx := liveClient(t)

	t.Run("ExampleClassifiesASentenceAndAnImageFile", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "go", "run", "./cmd/raw", env["COOKLINE_RAW_TEXT_MODEL"],
			"A great film, I loved it.", env["COOKLINE_RAW_IMAGE_MODEL"], env["COOKLINE_RAW_IMAGE_FILE"])
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("cmd/raw: %v\n%s", err, stderr.String())
		}
		var labels []string
		for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			var answer struct{ Label string }
			if err := json.Unmarshal([]byte(line), &answer); err != nil {
				t.Fatal(err)
			}
			labels = append(labels, answer.Label)
		}
		if strings.Join(labels, ",") != "pos,pos" {
			t.Fatalf("labels %v\n%s", labels, stdout.String())
		}
	})

	t.Run("MetadataNamesTheImageInputAndItsKind", func(t *testing.T) {
		resp, err := c.Serve.GetModelMetadata(ctx, &pb.GetModelMetadataRequest{Model: &pb.ModelRef{Name: env["COOKLINE_RAW_IMAGE_MODEL"]}})
		if err != nil {
			t.Fatal(err)
		}
		image := resp.GetMetadata().GetInputs()["image"]
		if image.GetKind() != pb.InputKind_INPUT_KIND_IMAGE || image.GetDtype() != pb.DataType_DATA_TYPE_STRING {
			t.Fatalf("image input %v", image)
		}
	})

	t.Run("StringsAndBytesPredictABadImageIsAnErrorNamingInputAndRow", func(t *testing.T) {
		rows, err := c.PredictInputs(ctx, env["COOKLINE_RAW_TEXT_MODEL"], Inputs{"text": Texts("good, great", "awful, bad")})
		if err != nil {
			t.Fatal(err)
		}
		if rows[0].Label != "pos" || rows[1].Label != "neg" {
			t.Fatalf("rows %+v", rows)
		}
		picture, err := os.ReadFile(env["COOKLINE_RAW_IMAGE_FILE"])
		if err != nil {
			t.Fatal(err)
		}
		answers, err := c.PredictStreamInputs(ctx, env["COOKLINE_RAW_IMAGE_MODEL"],
			[]Inputs{{"image": Images(picture)}, {"image": Images([]byte("no image"))}})
		if err != nil {
			t.Fatal(err)
		}
		if answers[0].Row == nil || answers[0].Row.Label != "pos" {
			t.Fatalf("first answer %+v", answers[0])
		}
		if answers[1].Error.GetCode() != 3 || !strings.Contains(answers[1].Error.GetMessage(), "inputs['image'] row 0: not an image") {
			t.Fatalf("second answer %+v", answers[1])
		}
	})
}
