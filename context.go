package apipool

import "context"

type operationKey struct{}

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
