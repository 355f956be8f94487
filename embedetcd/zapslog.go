package embedetcd

import (
	"context"
	"log/slog"

	"go.uber.org/zap/zapcore"
)

// slogCore is a zapcore.Core that writes etcd's zap entries to our slog
// logger, so the process has one log sink.
type slogCore struct {
	log   *slog.Logger
	level zapcore.LevelEnabler
	attrs []any
}

// NewSlogCore returns a zap core logging through log at level and above.
func NewSlogCore(log *slog.Logger, level zapcore.LevelEnabler) zapcore.Core {
	return &slogCore{log: log, level: level}
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return c.level.Enabled(l) }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, level: c.level, attrs: append(append([]any{}, c.attrs...), toAttrs(fields)...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	lvl := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		lvl = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		lvl = slog.LevelWarn
	case e.Level == zapcore.DebugLevel:
		lvl = slog.LevelDebug
	}
	c.log.Log(context.Background(), lvl, e.Message, append(append([]any{}, c.attrs...), toAttrs(fields)...)...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func toAttrs(fields []zapcore.Field) []any {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, k, v)
	}
	return out
}
