package apipool

import (
	"context"

	"github.com/apipool-ng/apipool/internal/ctxkey"
)

// operationKey is shared with the apipool proxy, whose request context
// answers it itself.
type operationKey = ctxkey.Operation

// ContextWithOperation returns a context that names the API operation of
// the requests made with it ("createChatCompletion", "getPlace"). The name
// reaches the usage events and spans of those requests.
func ContextWithOperation(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, operationKey{}, name)
}

// OperationFrom returns the operation name set by ContextWithOperation, or
// "".
func OperationFrom(ctx context.Context) string {
	s, _ := ctx.Value(operationKey{}).(string)
	return s
}

// clientKey is shared with the apipool proxy, whose request context
// answers it itself.
type clientKey = ctxkey.Client

// ContextWithClient returns a context that names who sends the requests
// made with it (a tenant, a team, a job). The name reaches the usage
// events (recorder.Event.Client), where stats can sum by it. The proxy
// sets it to the client token's name.
func ContextWithClient(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, clientKey{}, name)
}

// ClientFrom returns the client name set by ContextWithClient, or "".
func ClientFrom(ctx context.Context) string {
	s, _ := ctx.Value(clientKey{}).(string)
	return s
}
