package cookline

import (
	"encoding/binary"
	"fmt"
	"math"

	pb "cookline/client/gen/cooklinev1"
)

// Float32Matrix encodes equal-length rows as a float32 Tensor of shape [rows, columns]:
// raw little-endian values in C order, as cookline.v1.Tensor.content holds them.
func Float32Matrix(rows [][]float32) (*pb.Tensor, error) {
	columns := 0
	if len(rows) > 0 {
		columns = len(rows[0])
	}
	content := make([]byte, 0, 4*len(rows)*columns)
	for i, row := range rows {
		if len(row) != columns {
			return nil, fmt.Errorf("row %d has %d values, expected %d", i, len(row), columns)
		}
		for _, v := range row {
			content = binary.LittleEndian.AppendUint32(content, math.Float32bits(v))
		}
	}
	return &pb.Tensor{Dtype: pb.DataType_DATA_TYPE_FLOAT32, Shape: []int64{int64(len(rows)), int64(columns)}, Content: content}, nil
}

// Texts encodes sentences as a DATA_TYPE_STRING Tensor of shape [rows] (a text input), UTF-8.
func Texts(values ...string) *pb.Tensor {
	out := make([][]byte, len(values))
	for i, v := range values {
		out[i] = []byte(v)
	}
	return &pb.Tensor{Dtype: pb.DataType_DATA_TYPE_STRING, Shape: []int64{int64(len(values))}, StringValues: out}
}

// Images encodes image files (PNG, JPEG, GIF or BMP bytes, as read from disk) as a
// DATA_TYPE_STRING Tensor of shape [rows] (an image input); the model decodes them.
func Images(files ...[]byte) *pb.Tensor {
	return &pb.Tensor{Dtype: pb.DataType_DATA_TYPE_STRING, Shape: []int64{int64(len(files))}, StringValues: files}
}

// StringMatrix encodes equal-length rows of strings (category columns) as a DATA_TYPE_STRING
// Tensor of shape [rows, columns].
func StringMatrix(rows [][]string) (*pb.Tensor, error) {
	columns := 0
	if len(rows) > 0 {
		columns = len(rows[0])
	}
	values := make([][]byte, 0, len(rows)*columns)
	for i, row := range rows {
		if len(row) != columns {
			return nil, fmt.Errorf("row %d has %d values, expected %d", i, len(row), columns)
		}
		for _, v := range row {
			values = append(values, []byte(v))
		}
	}
	return &pb.Tensor{Dtype: pb.DataType_DATA_TYPE_STRING, Shape: []int64{int64(len(rows)), int64(columns)},
		StringValues: values}, nil
}

// Float32s decodes a float32 Tensor's content into its values, in C order.
func Float32s(t *pb.Tensor) ([]float32, error) {
	if t.GetDtype() != pb.DataType_DATA_TYPE_FLOAT32 {
		return nil, fmt.Errorf("expected DATA_TYPE_FLOAT32, got %s", t.GetDtype())
	}
	content := t.GetContent()
	if len(content)%4 != 0 {
		return nil, fmt.Errorf("content has %d bytes, not a multiple of 4", len(content))
	}
	values := make([]float32, len(content)/4)
	for i := range values {
		values[i] = math.Float32frombits(binary.LittleEndian.Uint32(content[4*i:]))
	}
	return values, nil
}

// Float32Rows decodes a 2-d float32 Tensor into rows (slices of one backing array).
func Float32Rows(t *pb.Tensor) ([][]float32, error) {
	if len(t.GetShape()) != 2 {
		return nil, fmt.Errorf("expected a 2-d tensor, got shape %v", t.GetShape())
	}
	values, err := Float32s(t)
	if err != nil {
		return nil, err
	}
	rows, columns := int(t.Shape[0]), int(t.Shape[1])
	if rows*columns != len(values) {
		return nil, fmt.Errorf("shape %v does not match %d values", t.Shape, len(values))
	}
	out := make([][]float32, rows)
	for i := range out {
		out[i] = values[i*columns : (i+1)*columns]
	}
	return out, nil
}

// Strings decodes a DATA_TYPE_STRING tensor's values as Go strings.
func Strings(t *pb.Tensor) ([]string, error) {
	if t.GetDtype() != pb.DataType_DATA_TYPE_STRING {
		return nil, fmt.Errorf("expected DATA_TYPE_STRING, got %s", t.GetDtype())
	}
	out := make([]string, len(t.GetStringValues()))
	for i, b := range t.GetStringValues() {
		out[i] = string(b)
	}
	return out, nil
}
