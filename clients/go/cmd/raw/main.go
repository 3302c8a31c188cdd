// Command raw classifies a sentence with a text model and an image file with an image
// model, sending them as they are (the model tokenizes the text and decodes the image
// itself). stdout gets one JSON line per answer: {"input", "label", "scores"}. It exits 0
// when both came back.
//
//	COOKLINE_SERVE_ADDR=host:50054 go run ./cmd/raw TEXT_MODEL "a sentence" IMAGE_MODEL picture.png
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	cookline "cookline/client"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, `usage: raw TEXT_MODEL "a sentence" IMAGE_MODEL picture.png`)
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3], os.Args[4]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
}

func run(textModel, sentence, imageModel, imageFile string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client, err := cookline.New(cookline.Config{})
	if err != nil {
		return err
	}
	defer client.Close()
	rows, err := client.PredictInputs(ctx, textModel, cookline.Inputs{"text": cookline.Texts(sentence)})
	if err != nil {
		return err
	}
	printAnswer(sentence, rows[0])
	picture, err := os.ReadFile(imageFile)
	if err != nil {
		return err
	}
	answers, err := client.PredictStreamInputs(ctx, imageModel, []cookline.Inputs{{"image": cookline.Images(picture)}})
	if err != nil {
		return err
	}
	if answers[0].Error != nil {
		return fmt.Errorf("%s: %s", imageFile, answers[0].Error.GetMessage())
	}
	printAnswer(imageFile, *answers[0].Row)
	return nil
}

func printAnswer(input string, row cookline.Row) {
	answer := map[string]any{"input": input, "label": row.Label, "scores": row.Scores}
	if row.Detections != nil { // a detector: its boxes instead
		answer = map[string]any{"input": input, "detections": row.Detections}
	}
	line, _ := json.Marshal(answer)
	fmt.Println(string(line))
}
