package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// codec turns plain bytes into stored ones and back: zstd, then age
// encryption to the identity's recipient when there is an identity. A
// stored object says what it is by its first bytes, so a reader needs no
// other record of how it was written.
type codec struct {
	id *age.X25519Identity // nil: no encryption
}

func newCodec(identity string) (*codec, error) {
	if identity == "" {
		return &codec{}, nil
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(identity))
	if err != nil {
		return nil, fmt.Errorf("backup: encryption key: %w", err)
	}
	return &codec{id: id}, nil
}

var ageMagic = []byte("age-encryption.org/v1")

// encoder wraps w; closing it flushes and finishes every layer (not w).
func (c *codec) encoder(w io.Writer) (io.WriteCloser, error) {
	var enc io.WriteCloser
	if c.id != nil {
		var err error
		if enc, err = age.Encrypt(w, c.id.Recipient()); err != nil {
			return nil, fmt.Errorf("backup: encrypt: %w", err)
		}
		w = enc
	}
	z, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &layers{z, enc}, nil
}

type layers struct {
	z   *zstd.Encoder
	enc io.WriteCloser
}

func (l *layers) Write(p []byte) (int, error) { return l.z.Write(p) }
func (l *layers) Close() error {
	err := l.z.Close()
	if l.enc != nil {
		err = errors.Join(err, l.enc.Close())
	}
	return err
}

// encode is encoder over a whole buffer.
func (c *codec) encode(p []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := c.encoder(&buf)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(p); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decoder reads a stored object.
func (c *codec) decoder(r io.Reader) (io.ReadCloser, error) {
	br := &peekReader{r: r}
	head, err := br.peek(len(ageMagic))
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	var in io.Reader = br
	if bytes.Equal(head, ageMagic) {
		if c.id == nil {
			return nil, errors.New("backup: the object is encrypted and no encryption key is set (NODEHA_BACKUP_ENCRYPTION_KEY_FILE)")
		}
		if in, err = age.Decrypt(br, c.id); err != nil {
			return nil, fmt.Errorf("backup: decrypt (is NODEHA_BACKUP_ENCRYPTION_KEY_FILE the key it was written with?): %w", err)
		}
	}
	z, err := zstd.NewReader(in, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return z.IOReadCloser(), nil
}

// peekReader lets the decoder look at the first bytes of a stream.
type peekReader struct {
	r    io.Reader
	head []byte
}

func (p *peekReader) peek(n int) ([]byte, error) {
	p.head = make([]byte, n)
	k, err := io.ReadFull(p.r, p.head)
	p.head = p.head[:k]
	return p.head, err
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	return p.r.Read(b)
}
