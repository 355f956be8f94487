package spilo_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"iter"
	"log/slog"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"

	"github.com/nodeha/nodeha/spilo"
)

type fakePull struct {
	io.Reader
	msgs []jsonstream.Message
}

func (f *fakePull) Close() error               { return nil }
func (f *fakePull) Wait(context.Context) error { return nil }
func (f *fakePull) JSONMessages(context.Context) iter.Seq2[jsonstream.Message, error] {
	return func(yield func(jsonstream.Message, error) bool) {
		for _, m := range f.msgs {
			if !yield(m, nil) {
				return
			}
		}
	}
}

type fakeImages struct {
	present bool
	pulled  []string
	pullErr error
	msgs    []jsonstream.Message
}

func (f *fakeImages) ImageInspect(ctx context.Context, ref string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	if f.present {
		return client.ImageInspectResult{}, nil
	}
	return client.ImageInspectResult{}, cerrdefs.ErrNotFound.WithMessage("no such image: " + ref)
}

func (f *fakeImages) ImagePull(ctx context.Context, ref string, _ client.ImagePullOptions) (client.ImagePullResponse, error) {
	f.pulled = append(f.pulled, ref)
	if f.pullErr != nil {
		return nil, f.pullErr
	}
	return &fakePull{Reader: strings.NewReader(""), msgs: f.msgs}, nil
}

func TestEnsureImagePresentDoesNotPull(t *testing.T) {
	f := &fakeImages{present: true}
	if err := spilo.EnsureImage(context.Background(), f, "img:1", slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	if len(f.pulled) != 0 {
		t.Errorf("pulled %v although the image is present", f.pulled)
	}
}

func TestEnsureImagePullsMissingWithProgress(t *testing.T) {
	f := &fakeImages{msgs: []jsonstream.Message{
		{Status: "Pulling from zalando/spilo-15", ID: "3.0-p1"},
		{Status: "Downloading", ID: "abc", Progress: &jsonstream.Progress{Current: 50, Total: 100}},
		{Status: "Pull complete", ID: "abc"},
	}}
	var logs bytes.Buffer
	if err := spilo.EnsureImage(context.Background(), f, "ghcr.io/zalando/spilo-15:3.0-p1", slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if len(f.pulled) != 1 || f.pulled[0] != "ghcr.io/zalando/spilo-15:3.0-p1" {
		t.Fatalf("pulled %v", f.pulled)
	}
	for _, want := range []string{"pulling image", "progress=50%", "Pull complete", "image pulled"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("pull log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestEnsureImagePullFailureNamesTheSetting(t *testing.T) {
	for name, f := range map[string]*fakeImages{
		"request fails": {pullErr: errors.New("dial tcp: connection refused\nmore")},
		"stream error":  {msgs: []jsonstream.Message{{Error: &jsonstream.Error{Message: "manifest unknown"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			err := spilo.EnsureImage(context.Background(), f, "nope:1", slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil || !strings.HasPrefix(err.Error(), `NODEHA_IMAGE (--image): image "nope:1" is not present and cannot be pulled`) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error = %v, want one line naming NODEHA_IMAGE", err)
			}
		})
	}
}
