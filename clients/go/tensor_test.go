package cookline

import (
	"encoding/binary"
	"math"
	"reflect"
	"testing"

	pb "cookline/client/gen/cooklinev1"
)

func TestFloat32MatrixWritesLittleEndianCOrderBytes(t *testing.T) {
	tensor, err := Float32Matrix([][]float32{{1.5, -2}, {3, 4.25}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tensor.Shape, []int64{2, 2}) || tensor.Dtype != pb.DataType_DATA_TYPE_FLOAT32 {
		t.Fatalf("shape %v dtype %s", tensor.Shape, tensor.Dtype)
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(tensor.Content[12:])); got != 4.25 {
		t.Fatalf("last value %v, want 4.25", got)
	}
}

func TestFloat32RowsDecodesWhatFloat32MatrixEncodes(t *testing.T) {
	want := [][]float32{{1, 2, 3}, {4, 5, 6}}
	tensor, _ := Float32Matrix(want)
	got, err := Float32Rows(tensor)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
}

func TestBadTensorsAreRefused(t *testing.T) {
	if _, err := Float32Matrix([][]float32{{1, 2}, {3}}); err == nil || err.Error() != "row 1 has 1 values, expected 2" {
		t.Fatalf("ragged rows: %v", err)
	}
	if _, err := Float32s(&pb.Tensor{Dtype: pb.DataType_DATA_TYPE_INT32, Content: make([]byte, 4)}); err == nil {
		t.Fatal("int32 tensor decoded as float32")
	}
	if _, err := Float32Rows(&pb.Tensor{Dtype: pb.DataType_DATA_TYPE_FLOAT32, Shape: []int64{2, 2}, Content: make([]byte, 4)}); err == nil {
		t.Fatal("shape [2 2] with one value accepted")
	}
}

func TestRowsFromResponseDecodesADetectorsBoxes(t *testing.T) {
	boxes, _ := Float32Matrix([][]float32{{0.1, 0.2, 0.3, 0.4, 0, 0, 0, 0}})
	boxes.Shape = []int64{1, 2, 4}
	scores, _ := Float32Matrix([][]float32{{0.9, 0}})
	resp := &pb.PredictResponse{Outputs: map[string]*pb.Tensor{
		"boxes": boxes, "scores": scores, "labels": Texts("circle", ""),
	}}
	rows, err := RowsFromResponse(resp)
	want := []Row{{Detections: []Detection{{Label: "circle", Score: 0.9, Box: [4]float32{0.1, 0.2, 0.3, 0.4}}}}}
	if err != nil || !reflect.DeepEqual(rows, want) {
		t.Fatalf("got %+v, %v; want %+v", rows, err, want)
	}
}
