// The API docs page (Swagger UI). It is a static file: nothing a request carries is written
// into the page. A token in the page's own address (?token=...) is read here, as data, and
// sent with the schema request and with "Try it out" requests as a bearer header.
(function () {
  'use strict';
  var token = new URLSearchParams(window.location.search).get('token');
  SwaggerUIBundle({
    url: 'openapi.json' + (token ? '?token=' + encodeURIComponent(token) : ''),
    dom_id: '#swagger-ui',
    layout: 'BaseLayout',
    deepLinking: true,
    showExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    requestInterceptor: function (request) {
      if (token) {
        request.headers = request.headers || {};
        request.headers.Authorization = 'Bearer ' + token;
      }
      return request;
    },
  });
})();
