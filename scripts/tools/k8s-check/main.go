// Command k8s-check reads Kubernetes manifests (YAML, several documents separated by ---) on
// standard input and decodes each one strictly into the k8s.io/api type of its apiVersion and
// kind: an unknown or misspelled field, a duplicate field, a wrong value type or an apiVersion and
// kind it does not know fail the check. It prints one line per object and exits 1 on any error.
//
//	kustomize build deploy/kubernetes/overlays/prod | k8s-check
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// known maps "apiVersion/kind" to the Go type that the API server decodes it into.
var known = map[string]any{
	"v1/ConfigMap":                             corev1.ConfigMap{},
	"v1/Secret":                                corev1.Secret{},
	"v1/Service":                               corev1.Service{},
	"v1/ServiceAccount":                        corev1.ServiceAccount{},
	"v1/Namespace":                             corev1.Namespace{},
	"v1/PersistentVolumeClaim":                 corev1.PersistentVolumeClaim{},
	"apps/v1/Deployment":                       appsv1.Deployment{},
	"apps/v1/StatefulSet":                      appsv1.StatefulSet{},
	"batch/v1/Job":                             batchv1.Job{},
	"policy/v1/PodDisruptionBudget":            policyv1.PodDisruptionBudget{},
	"autoscaling/v2/HorizontalPodAutoscaler":   autoscalingv2.HorizontalPodAutoscaler{},
	"networking.k8s.io/v1/NetworkPolicy":       networkingv1.NetworkPolicy{},
	"networking.k8s.io/v1/Ingress":             networkingv1.Ingress{},
	"rbac.authorization.k8s.io/v1/Role":        rbacv1.Role{},
	"rbac.authorization.k8s.io/v1/RoleBinding": rbacv1.RoleBinding{},
	"monitoring.coreos.com/v1/ServiceMonitor":  monitoringv1.ServiceMonitor{},
	"monitoring.coreos.com/v1/PrometheusRule":  monitoringv1.PrometheusRule{},
}

type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func check(doc []byte) (string, error) {
	var h header
	if err := yaml.Unmarshal(doc, &h); err != nil {
		return "", fmt.Errorf("not a Kubernetes object: %w", err)
	}
	id := fmt.Sprintf("%s %s/%s", h.APIVersion, h.Kind, h.Metadata.Name)
	proto, ok := known[h.APIVersion+"/"+h.Kind]
	if !ok {
		return id, fmt.Errorf("unknown apiVersion and kind %s/%s", h.APIVersion, h.Kind)
	}
	// sigs.k8s.io/yaml converts to JSON (refusing duplicate keys in strict mode); sigs.k8s.io/json
	// then decodes as the API server does: field names case-sensitively, and any field the Go type
	// does not have, at any depth, is an error.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return id, err
	}
	target := reflect.New(reflect.TypeOf(proto)).Interface()
	strict, err := kjson.UnmarshalStrict(js, target, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return id, err
	}
	if len(strict) > 0 {
		messages := make([]string, len(strict))
		for i, e := range strict {
			messages[i] = e.Error()
		}
		return id, errors.New(strings.Join(messages, "; "))
	}
	if h.Metadata.Name == "" {
		return id, errors.New("metadata.name is empty")
	}
	return id, nil
}

func main() {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(os.Stdin))
	failed, count := 0, 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "k8s-check: reading input: %v\n", err)
			os.Exit(2)
		}
		if len(bytes.TrimSpace(doc)) == 0 || string(bytes.TrimSpace(doc)) == "---" {
			continue
		}
		count++
		id, err := check(doc)
		if err != nil {
			failed++
			fmt.Printf("FAIL %s: %v\n", id, err)
		} else {
			fmt.Printf("ok %s\n", id)
		}
	}
	if count == 0 {
		fmt.Println("FAIL no objects on standard input")
		os.Exit(1)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
